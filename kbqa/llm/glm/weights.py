"""Reading a ChatGLM2/3 / GLM-4 checkpoint's tensors and renaming them onto transformers' `GlmForCausalLM`.

The mapping is the one transformers' own convert script for glm-4-9b-chat → glm-4-9b-chat-hf
applies (and llama.cpp's converter for ChatGLM): the fused `query_key_value` splits into
q/k/v rows [heads*d | groups*d | groups*d]; `dense` → o_proj; `dense_h_to_4h` (already
[gate; up] for SwiGLU) → gate_up_proj; `dense_4h_to_h` → down_proj; `final_layernorm` → norm;
`output_layer` → lm_head; the rotary `inv_freq` buffer is recomputed, not loaded.

`.bin` files load with `torch.load(weights_only=True)`: tensors only, no unpickling of code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kbqa.errors import LLMError

_LAYER = re.compile(r"^(?:transformer\.)?encoder\.layers\.(\d+)\.(.+)$")
_SIMPLE = {
    "input_layernorm.weight": "input_layernorm.weight",
    "post_attention_layernorm.weight": "post_attention_layernorm.weight",
    "self_attention.dense.weight": "self_attn.o_proj.weight",
    "mlp.dense_h_to_4h.weight": "mlp.gate_up_proj.weight",
    "mlp.dense_4h_to_h.weight": "mlp.down_proj.weight",
}
_TOP = {
    "embedding.word_embeddings.weight": "model.embed_tokens.weight",
    "encoder.final_layernorm.weight": "model.norm.weight",
    "output_layer.weight": "lm_head.weight",
}


def checkpoint_files(model_dir: Path) -> list[Path]:
    """The weight files, safetensors preferred; an index json lists the shards (HF layout)."""
    for index_name, pattern in (("model.safetensors.index.json", "*.safetensors"),
                                ("pytorch_model.bin.index.json", "pytorch_model*.bin")):
        index = model_dir / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise LLMError(f"{model_dir}: cannot read {index_name}: {exc}") from exc
            files = [model_dir / name for name in sorted(set(weight_map.values()))]
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise LLMError(f"{model_dir}: {index_name} lists shards that are not there: {', '.join(missing[:4])} "
                               "(the download is incomplete; fetch the missing files)")
            return files
        found = sorted(model_dir.glob(pattern))
        if found:
            return found
    raise LLMError(f"{model_dir}: no weights (*.safetensors or pytorch_model*.bin) in the folder; copy the "
                   "model's weight files (and their .index.json) from its download into it")


def read_tensors(path: Path) -> Iterator[tuple[str, Any]]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                yield key, f.get_tensor(key)
        return
    import torch

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # weights_only refuses pickled code; any other failure is a bad file
        raise LLMError(f"{path}: cannot read it as tensors-only ({type(exc).__name__}: {exc}); kbqa never "
                       "unpickles code from a model folder — convert it to safetensors") from exc
    if not isinstance(state, dict):
        raise LLMError(f"{path}: not a state dict")
    yield from state.items()


def map_name(name: str, heads: int, groups: int, head_dim: int) -> list[tuple[str, slice | None]]:
    """Target names (with the row slice to take) for one upstream tensor; [] for buffers we drop."""
    bare = name.removeprefix("transformer.")
    if bare.endswith("rotary_pos_emb.inv_freq"):
        return []
    if bare in _TOP:
        return [(_TOP[bare], None)]
    m = _LAYER.match(name)
    if m:
        layer, rest = m.groups()
        base = f"model.layers.{layer}."
        if rest in _SIMPLE:
            return [(base + _SIMPLE[rest], None)]
        if rest in ("self_attention.query_key_value.weight", "self_attention.query_key_value.bias"):
            kind = rest.rsplit(".", 1)[1]
            q, kv = heads * head_dim, groups * head_dim
            return [(f"{base}self_attn.q_proj.{kind}", slice(0, q)),
                    (f"{base}self_attn.k_proj.{kind}", slice(q, q + kv)),
                    (f"{base}self_attn.v_proj.{kind}", slice(q + kv, q + 2 * kv))]
    raise LLMError(f"unexpected tensor {name!r}: not a ChatGLM2/3 or GLM-4 fp16/bf16 checkpoint (int4/int8 "
                   "checkpoints and P-tuning prefixes are not supported natively; use the original weights, or "
                   "convert to GGUF for llama.cpp)")


def load_glm_state(model_dir: Path, *, heads: int, groups: int, head_dim: int, dtype: Any) -> dict[str, Any]:
    """All tensors of the folder, renamed to GlmForCausalLM's names and cast to `dtype` as they are read."""
    out: dict[str, Any] = {}
    for path in checkpoint_files(model_dir):
        for name, tensor in read_tensors(path):
            for target, rows in map_name(name, heads, groups, head_dim):
                part = tensor if rows is None else tensor[rows]
                out[target] = part.to(dtype).contiguous()
    return out
