"""Weight files of a ChatGLM folder: the name mapping, and clear errors for what cannot load."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from kbqa.errors import LLMError
from kbqa.llm.glm.weights import checkpoint_files, load_glm_state, map_name


def test_qkv_is_split_into_query_key_value_rows() -> None:
    targets = map_name("transformer.encoder.layers.3.self_attention.query_key_value.weight", 4, 2, 16)
    assert targets == [("model.layers.3.self_attn.q_proj.weight", slice(0, 64)),
                       ("model.layers.3.self_attn.k_proj.weight", slice(64, 96)),
                       ("model.layers.3.self_attn.v_proj.weight", slice(96, 128))]
    assert map_name("transformer.rotary_pos_emb.inv_freq", 4, 2, 16) == []
    assert map_name("transformer.output_layer.weight", 4, 2, 16) == [("lm_head.weight", None)]


def test_quantized_tensors_are_refused_by_name() -> None:
    with pytest.raises(LLMError, match="int4/int8"):
        map_name("transformer.encoder.layers.0.self_attention.query_key_value.weight_scale", 4, 2, 16)


def test_bin_files_never_unpickle_code(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("pwned",))

    with (tmp_path / "pytorch_model.bin").open("wb") as f:
        pickle.dump({"transformer.output_layer.weight": Payload()}, f)
    with pytest.raises(LLMError, match=r"tensors-only.*never unpickles code"):
        load_glm_state(tmp_path, heads=4, groups=2, head_dim=16, dtype=torch.float32)


def test_missing_shard_and_no_weights(tmp_path: Path) -> None:
    with pytest.raises(LLMError, match=r"no weights \(\*.safetensors or pytorch_model\*.bin\)"):
        checkpoint_files(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(LLMError, match="incomplete"):
        checkpoint_files(tmp_path)
