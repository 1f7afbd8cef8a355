"""Loading a ChatGLM-family folder natively, with every failure turned into an actionable LLMError.

Each error names the folder, the family kbqa detected (and why) and what to do, because the
user's only other view of this path would be a traceback from deep inside torch or safetensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kbqa.errors import LLMError
from kbqa.llm.glm.family import Detected, detect_family
from kbqa.llm.glm.model import load_glm_model
from kbqa.llm.glm.tokenizers import GlmTokenizerBase, load_tokenizer
from kbqa.llm.glm.v1 import V1Tokenizer, load_v1_model, load_v1_tokenizer

GGUF_ROUTE = ("convert the folder to GGUF with llama.cpp's convert_hf_to_gguf.py (ChatGLM3 and GLM-4; quantize it "
              "with llama-quantize, e.g. Q4_K_M) and set llm.backend: bundled, llm.model: /path/to/model.gguf")

def _bare(exc: LLMError, model_dir: Path) -> str:
    """The inner message without a repeated folder name."""
    return str(exc).removeprefix(f"{model_dir}: ")


def detect(model_dir: Path, config: dict[str, Any]) -> Detected:
    return detect_family(model_dir, config)


def native_tokenizer(model_dir: Path, detected: Detected) -> GlmTokenizerBase | V1Tokenizer:
    try:
        if detected.family == "chatglm-6b":
            return load_v1_tokenizer(model_dir)
        return load_tokenizer(model_dir, detected.family)
    except LLMError as exc:
        raise LLMError(f"{model_dir}: detected {detected.label} ({detected.reason}); cannot load its tokenizer: "
                       f"{_bare(exc, model_dir)}") from exc


def native_model(model_dir: Path, config: dict[str, Any], detected: Detected, *, dtype: Any, device: str,
                 bits: int | None) -> Any:
    """GlmForCausalLM on `device`; `bits` (4/8) quantises its linear layers with bitsandbytes on CUDA."""
    import torch

    where = f"{model_dir}: detected {detected.label} ({detected.reason})"
    if bits and not device.startswith("cuda"):
        raise LLMError(f"{where}: llm.quantize={bits} needs a CUDA GPU (bitsandbytes) but the device is "
                       f"{device!r}. On a CPU, unset llm.quantize or {GGUF_ROUTE}.")
    if bits:
        try:
            import bitsandbytes  # noqa: F401 - only checks it is installed
        except ImportError as exc:
            raise LLMError(f"{where}: llm.quantize={bits} needs bitsandbytes: pip install bitsandbytes") from exc
    try:
        model = (load_v1_model(model_dir, config, dtype) if detected.family == "chatglm-6b"
                 else load_glm_model(model_dir, config, dtype))
        if bits:
            quantize_linears(model, bits, dtype)
        return model.to(device)
    except LLMError as exc:
        raise LLMError(f"{where}: {_bare(exc, model_dir)}") from exc
    except torch.cuda.OutOfMemoryError as exc:
        raise LLMError(f"{where}: out of GPU memory on {device} (try llm.quantize: 4 or 8, or {GGUF_ROUTE})") from exc
    except MemoryError as exc:
        raise LLMError(f"{where}: out of memory loading the weights (try a GPU, or {GGUF_ROUTE})") from exc
    except (OSError, ValueError, RuntimeError, KeyError) as exc:  # torch/safetensors on a bad or partial file
        raise LLMError(f"{where}: cannot load the weights: {type(exc).__name__}: {exc} (a partial download? "
                       "re-fetch the weight files)") from exc


def quantize_linears(model: Any, bits: int, dtype: Any) -> None:
    """Swap the decoder's nn.Linear layers for bitsandbytes ones; they quantise when moved to CUDA.

    Done by hand because transformers only quantises inside from_pretrained, and this model is
    assembled from renamed tensors, not loaded from an HF-layout folder. lm_head stays in `dtype`
    (as transformers' own bitsandbytes integration leaves it). Not exercised in CI (no GPU).
    """
    import bitsandbytes as bnb
    import torch

    layers = model.model.layers if hasattr(model, "model") else model.transformer.layers
    for layer in layers:
        for parent in (getattr(layer, "self_attn", None) or layer.attention, layer.mlp):
            for name, child in list(parent.named_children()):
                if not isinstance(child, torch.nn.Linear):
                    continue
                has_bias = child.bias is not None
                new: Any
                if bits == 4:
                    new = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=has_bias,
                                            compute_dtype=dtype, quant_type="nf4")
                    new.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, quant_type="nf4")
                else:
                    new = bnb.nn.Linear8bitLt(child.in_features, child.out_features, bias=has_bias,
                                              has_fp16_weights=False, threshold=6.0)
                    new.weight = bnb.nn.Int8Params(child.weight.data, requires_grad=False, has_fp16_weights=False)
                if has_bias:
                    new.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
                setattr(parent, name, new)
