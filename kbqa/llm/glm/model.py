"""A ChatGLM2/3 / GLM-4 folder as transformers' own `GlmForCausalLM`, with no remote code.

Same computation as upstream's `ChatGLMForConditionalGeneration` (checked against it on tiny
random checkpoints by tests/integration/test_llm_glm_equivalence.py): pre-RMSNorm blocks,
multi-query groups (upstream repeats each key/value group for consecutive query heads, as
`repeat_kv` does), rotary on the first half of each head's dims with interleaved pairs and base
10000 × `rope_ratio` (ChatGLM3-32k: 50, GLM-4: 500), bias on q/k/v only, SwiGLU with the gate
in the first half of `dense_h_to_4h`, causal attention scaled by 1/sqrt(head_dim) (upstream's
query-key layer scaling multiplies and divides by the layer number, which cancels in fp32).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from kbqa.errors import LLMError
from kbqa.llm.glm.weights import load_glm_state

# config.json values the mapping assumes; anything else is a different computation.
_REQUIRED = {"rmsnorm": True, "add_bias_linear": False, "apply_residual_connection_post_layernorm": False,
             "post_layer_norm": True}


def glm_config(config: dict[str, Any]) -> Any:
    """transformers' GlmConfig for a ChatGLM-layout config.json."""
    from transformers import GlmConfig

    for key, want in _REQUIRED.items():
        if key in config and bool(config[key]) != want:
            raise LLMError(f"config.json has {key}={config[key]!r}; kbqa's native GLM path supports only {want!r}")
    if config.get("pre_seq_len"):
        raise LLMError("config.json has pre_seq_len (a P-tuning v2 checkpoint); merge or drop the prefix first")
    if config.get("quantization_bit"):
        raise LLMError(f"config.json has quantization_bit={config['quantization_bit']} (THUDM's int4/int8 "
                       "checkpoint, cpm_kernels format); use the original fp16/bf16 folder with llm.quantize, "
                       "or a GGUF with llm.backend: bundled")
    heads = int(config["num_attention_heads"])
    hidden = int(config["hidden_size"])
    head_dim = int(config.get("kv_channels") or hidden // heads)
    groups = int(config["multi_query_group_num"]) if config.get("multi_query_attention") else heads
    theta = 10000.0 * float(config.get("rope_ratio") or 1)
    eos = config.get("eos_token_id")
    kwargs: dict[str, Any] = {
        "vocab_size": int(config.get("padded_vocab_size") or config["vocab_size"]),
        "hidden_size": hidden, "intermediate_size": int(config["ffn_hidden_size"]),
        "num_hidden_layers": int(config.get("num_layers") or config["num_hidden_layers"]),
        "num_attention_heads": heads, "num_key_value_heads": groups, "head_dim": head_dim,
        "rms_norm_eps": float(config.get("layernorm_epsilon", 1e-5)),
        "max_position_embeddings": int(config.get("seq_length") or 8192),
        "attention_bias": bool(config.get("add_qkv_bias", True)), "tie_word_embeddings": False,
        "pad_token_id": config.get("pad_token_id"), "eos_token_id": eos, "bos_token_id": None,
    }
    params = inspect.signature(GlmConfig.__init__).parameters
    if "rope_parameters" in params:  # transformers >= 5
        kwargs["rope_parameters"] = {"rope_type": "default", "rope_theta": theta, "partial_rotary_factor": 0.5}
    else:
        kwargs.update(rope_theta=theta, partial_rotary_factor=0.5)
    return GlmConfig(**kwargs)


def load_glm_model(model_dir: Path, config: dict[str, Any], dtype: Any) -> Any:
    """GlmForCausalLM with the folder's weights, on the CPU, in eval mode."""
    import torch
    from transformers import GlmForCausalLM

    cfg = glm_config(config)
    state = load_glm_state(model_dir, heads=cfg.num_attention_heads, groups=cfg.num_key_value_heads,
                           head_dim=cfg.head_dim, dtype=dtype)
    # Built on the meta device so a 9B model is not first filled with random numbers; the
    # weights are then assigned, and the rotary module (a computed buffer) rebuilt for real.
    with torch.device("meta"):
        model = GlmForCausalLM(cfg)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise LLMError(f"{model_dir}: the weights do not fit the config (missing {sorted(missing)[:4]}, "
                       f"unexpected {sorted(unexpected)[:4]}); is config.json from the same download?")
    model.model.rotary_emb = type(model.model.rotary_emb)(config=cfg)
    return model.eval()  # no .to(dtype): the rotary inv_freq buffer stays float32, as upstream computes it
