"""Tiny ChatGLM2/3 and GLM-4 model folders, as a user's download looks, built from tests/data/glm_reference.

Each folder gets the upstream config.json / tokenizer_config.json, the real tokenizer file and
the seeded random weights under their UPSTREAM names (transformer.encoder.layers.N.…), in one of
the layouts real downloads use: a single model.safetensors, sharded safetensors with an index,
or sharded pytorch_model-*.bin with an index. Upstream's .py files are added too, to show they
are never imported.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any, Literal

import numpy as np

from kbqa.llm.glm.tiny import checksum, random_weights

REFERENCE = Path(__file__).parent / "data" / "glm_reference"
FAMILIES = ("chatglm-6b", "chatglm2", "chatglm3", "glm4")
TOKENIZER_FILES = {"chatglm-6b": ("chatglm-6b-ice_text.model.gz", "ice_text.model"),
                   "chatglm2": ("chatglm-tokenizer.model.gz", "tokenizer.model"),
                   "chatglm3": ("chatglm-tokenizer.model.gz", "tokenizer.model"),
                   "glm4": ("glm4-tokenizer.model.gz", "tokenizer.model")}
Layout = Literal["safetensors", "sharded-safetensors", "sharded-bin"]
# A remote-code file that would fail loudly if anything ever imported it.
TRAP = "raise RuntimeError('kbqa must never import the model folder\\'s code')\n"


def reference(family: str) -> dict[str, Any]:
    return dict(json.loads((REFERENCE / family / "reference.json").read_text(encoding="utf-8")))


def reference_logits(family: str) -> np.ndarray:
    return np.load(REFERENCE / family / "logits.npy")


def upstream_weights(family: str) -> dict[str, Any]:
    spec = json.loads((REFERENCE / family / "weights.json").read_text(encoding="utf-8"))
    tensors = random_weights(spec["shapes"], spec["seed"])
    sums = checksum(tensors)
    bad = [k for k, v in spec["sums"].items() if abs(sums[k] - v) > 1e-5 * max(1.0, abs(v))]
    assert not bad, f"regenerated weights differ from the reference's: {bad[:3]}"
    return tensors


def build_folder(family: str, dest: Path, layout: Layout = "safetensors") -> Path:
    import torch
    from safetensors.torch import save_file

    dest.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer_config.json"):
        shutil.copy(REFERENCE / family / name, dest / name)
    packed, name = TOKENIZER_FILES[family]
    (dest / name).write_bytes(gzip.decompress((REFERENCE / "tokenizers" / packed).read_bytes()))
    for code in ("modeling_chatglm.py", "tokenization_chatglm.py", "configuration_chatglm.py"):
        (dest / code).write_text(TRAP)
    tensors = upstream_weights(family)
    if layout == "safetensors":
        save_file(tensors, str(dest / "model.safetensors"))
        return dest
    names = sorted(tensors)
    halves = [names[: len(names) // 2], names[len(names) // 2:]]
    ext = "safetensors" if layout == "sharded-safetensors" else "bin"
    prefix = "model" if ext == "safetensors" else "pytorch_model"
    weight_map: dict[str, str] = {}
    for i, part in enumerate(halves, start=1):
        file = f"{prefix}-{i:05d}-of-00002.{ext}"
        shard = {k: tensors[k] for k in part}
        if ext == "safetensors":
            save_file(shard, str(dest / file))
        else:
            torch.save(shard, dest / file)
        weight_map.update(dict.fromkeys(part, file))
    index = f"{prefix}.{ext}.index.json"
    (dest / index).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return dest
