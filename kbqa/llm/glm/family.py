"""Which ChatGLM/GLM family a model folder holds, read from its config.json (no code is run).

THUDM's folders all say `model_type: chatglm` and differ only in sizes and keys:
ChatGLM-6B (v1) has `position_encoding_2d`; GLM-4 has the 151,552-row vocabulary; ChatGLM2
and ChatGLM3 have identical configs and the same `tokenizer.model`, and differ only in the
tokenizer code (ChatGLM3 adds the role tokens) — so we read `_name_or_path`, then the text
of `tokenization_chatglm.py` (read, never imported), then the folder's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Family = Literal["chatglm-6b", "chatglm2", "chatglm3", "glm4"]

LABELS: dict[Family, str] = {
    "chatglm-6b": "ChatGLM-6B (v1)",
    "chatglm2": "ChatGLM2-6B",
    "chatglm3": "ChatGLM3-6B",
    "glm4": "GLM-4-9B-Chat",
}
GLM4_VOCAB = 151552


@dataclass(frozen=True)
class Detected:
    family: Family
    reason: str

    @property
    def label(self) -> str:
        return LABELS[self.family]


def is_chatglm_config(config: dict[str, Any]) -> bool:
    """True for THUDM's remote-code layout (ChatGLM-6B/2/3, GLM-4 before its -hf conversion)."""
    if str(config.get("model_type", "")).lower() == "chatglm":
        return True
    auto_map = config.get("auto_map") or {}
    return isinstance(auto_map, dict) and any("chatglm" in str(v).lower() for v in auto_map.values())


def detect_family(model_dir: Path, config: dict[str, Any]) -> Detected:
    """The family of a ChatGLM-layout folder (call only when `is_chatglm_config` is true)."""
    if config.get("position_encoding_2d") is not None or "inner_hidden_size" in config:
        return Detected("chatglm-6b", "config.json has position_encoding_2d (the v1 layout)")
    vocab = config.get("padded_vocab_size") or config.get("vocab_size")
    if vocab == GLM4_VOCAB:
        return Detected("glm4", f"config.json has the GLM-4 vocabulary ({GLM4_VOCAB})")
    name = str(config.get("_name_or_path", "")).lower()
    for key, family in (("chatglm3", "chatglm3"), ("chatglm2", "chatglm2")):
        if key in name:
            return Detected(family, f"config.json _name_or_path is {config.get('_name_or_path')!r}")  # type: ignore[arg-type]
    code = model_dir / "tokenization_chatglm.py"
    if code.is_file():
        text = code.read_text(encoding="utf-8", errors="replace")
        if "<|observation|>" in text:
            return Detected("chatglm3", "tokenization_chatglm.py defines the ChatGLM3 role tokens")
        return Detected("chatglm2", "tokenization_chatglm.py has no role tokens (ChatGLM2)")
    folder = model_dir.resolve().name.lower()
    if "chatglm2" in folder:
        return Detected("chatglm2", "the folder's name")
    return Detected("chatglm3", "nothing tells ChatGLM2 from ChatGLM3; assumed ChatGLM3 (the more common)")
