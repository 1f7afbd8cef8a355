"""Deterministic random weights for tiny GLM checkpoints (tests and scripts/make_glm_reference.py).

The tiny fixture configs keep the real vocabularies (65,024 / 151,552 rows), so their
weights are tens of MB: too big to commit. Instead the reference script and the tests both
regenerate the same tensors from a seed and the upstream parameter names and shapes, which
*are* committed (tests/data/glm_reference/<family>/weights.json).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

SEED = 1234


def _scale(name: str) -> tuple[float, float]:
    """(mean, std) per kind of tensor: norms near 1, a wide output layer so greedy picks are not ties."""
    if name.endswith("layernorm.weight") or "layernorm" in name:
        return 1.0, 0.1
    if "output_layer" in name or name.endswith("lm_head.weight"):
        return 0.0, 0.5
    if "word_embeddings" in name:
        return 0.0, 1.0
    return 0.0, 0.1


def random_weights(shapes: Mapping[str, Sequence[int]], seed: int = SEED) -> dict[str, Any]:
    """One float32 tensor per name, each from its own generator so the order of names does not matter."""
    import torch

    out: dict[str, Any] = {}
    for name, shape in shapes.items():
        gen = torch.Generator().manual_seed(seed + zlib.crc32(name.encode()))
        mean, std = _scale(name)
        out[name] = torch.randn(tuple(shape), generator=gen, dtype=torch.float32) * std + mean
    return out


def checksum(tensors: Mapping[str, Any]) -> dict[str, float]:
    """Sum of each tensor: a cheap check that regenerated weights equal the ones the reference used."""
    return {name: float(t.double().sum()) for name, t in sorted(tensors.items())}
