"""ChatGLM family detection, config mapping and chat formats (no weights needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from glm_folders import REFERENCE

from kbqa.errors import LLMError
from kbqa.llm.glm.chat import chatglm2_prompt, qa_pairs
from kbqa.llm.glm.family import detect_family, is_chatglm_config
from kbqa.llm.glm.model import glm_config
from kbqa.llm.glm.native import detect


def _config(family: str) -> dict[str, object]:
    return dict(json.loads((REFERENCE / family / "config.json").read_text(encoding="utf-8")))


@pytest.mark.parametrize("family", ["chatglm-6b", "chatglm2", "chatglm3", "glm4"])
def test_families_from_their_real_configs(family: str, tmp_path: Path) -> None:
    config = _config(family)
    assert is_chatglm_config(config)
    assert detect_family(tmp_path, config).family == family


def test_chatglm2_and_3_told_apart_without_a_name(tmp_path: Path) -> None:
    config = _config("chatglm3")
    config.pop("_name_or_path")
    (tmp_path / "tokenization_chatglm.py").write_text('role_special_tokens = ["<|system|>", "<|observation|>"]')
    assert detect_family(tmp_path, config).family == "chatglm3"
    (tmp_path / "tokenization_chatglm.py").write_text('special_tokens = ["[MASK]", "[gMASK]", "sop", "eop"]')
    assert detect_family(tmp_path, config).family == "chatglm2"


def test_chatglm_6b_v1_is_detected(tmp_path: Path) -> None:
    config = {"model_type": "chatglm", "position_encoding_2d": True, "inner_hidden_size": 16384}
    assert detect(tmp_path, config).family == "chatglm-6b"


def test_glm_config_matches_upstream_sizes_and_rope() -> None:
    cfg = glm_config(_config("glm4"))
    assert (cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size) == (151552, 64, 128)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (4, 2, 16)
    assert cfg.attention_bias and not cfg.tie_word_embeddings
    rope = getattr(cfg, "rope_parameters", None) or {"rope_theta": cfg.rope_theta,
                                                     "partial_rotary_factor": cfg.partial_rotary_factor}
    assert rope["rope_theta"] == 10000 * 500 and rope["partial_rotary_factor"] == 0.5


def test_chatglm3_32k_rope_ratio() -> None:
    """chatglm3-6b-32k's config adds rope_ratio 50: the rotary base becomes 500,000 (as its code does)."""
    config = {**_config("chatglm3"), "rope_ratio": 50, "seq_length": 32768}
    cfg = glm_config(config)
    theta = (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta", getattr(cfg, "rope_theta", None))
    assert theta == 500000.0 and cfg.max_position_embeddings == 32768


@pytest.mark.parametrize(("key", "value", "match"), [
    ("quantization_bit", 4, "int4/int8"),
    ("pre_seq_len", 128, "P-tuning"),
    ("rmsnorm", False, "rmsnorm"),
    ("add_bias_linear", True, "add_bias_linear"),
])
def test_unsupported_variants_are_named(key: str, value: object, match: str) -> None:
    with pytest.raises(LLMError, match=match):
        glm_config({**_config("chatglm3"), key: value})


def test_chatglm2_prompt_as_upstream_build_prompt() -> None:
    query, history = qa_pairs([{"role": "system", "content": "S"}, {"role": "user", "content": "Q1"},
                               {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}])
    assert chatglm2_prompt(query, history) == "[Round 1]\n\n问：S\n\nQ1\n\n答：A1\n\n[Round 2]\n\n问：Q2\n\n答："


def test_chatglm_6b_ids_are_offset_by_the_image_tokens(tmp_path: Path) -> None:
    """The real ChatGLM-6B numbers text after 20,000 image tokens ([gMASK] = 130001); the test model uses 0."""
    import gzip

    from kbqa.llm.glm.v1 import V1Tokenizer

    model = tmp_path / "ice_text.model"
    model.write_bytes(gzip.decompress((REFERENCE / "tokenizers" / "chatglm-6b-ice_text.model.gz").read_bytes()))
    plain, shifted = V1Tokenizer(model, num_image_tokens=0), V1Tokenizer(model, num_image_tokens=20000)
    text = "第一行\n\t两个  空格 and English"
    assert shifted.encode(text) == [i + 20000 for i in plain.encode(text)]
    assert shifted.special("[gMASK]") == plain.special("[gMASK]") + 20000
    assert shifted.decode(shifted.encode(text)) == plain.decode(plain.encode(text))
    assert "\n\t两个  空格" in plain.decode(plain.encode(text))
