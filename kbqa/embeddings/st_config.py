"""Read a local sentence-transformers model directory without loading any weights.

What we need before (or instead of) loading the model: its dimension (for the index
fingerprint), the pooling it uses, max sequence length, prompts, and whether the module stack is
simple enough (Transformer → Pooling → optional Normalize) for the ONNX Runtime fast path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kbqa.errors import EmbeddingError, KbqaError

_LEGACY_POOLING = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
FAST_POOLING = frozenset({"cls", "max", "mean", "mean_sqrt_len_tokens", "lasttoken"})
"""Pooling modes the ONNX path reimplements in numpy."""


@dataclass(frozen=True)
class StModelInfo:
    """What a sentence-transformers directory says about itself."""

    path: Path
    transformer_dir: Path
    pooling: str
    """Single pooling mode name, or '' when the directory asks for something we do not redo."""
    dimension: int | None
    max_seq_length: int | None
    do_lower_case: bool = False
    include_prompt: bool = True
    extra_modules: tuple[str, ...] = ()
    """Module types after the pooling other than Normalize (e.g. Dense): ONNX path not used."""
    prompts: dict[str, str] = field(default_factory=dict)

    @property
    def onnx_compatible(self) -> bool:
        """True when Transformer → Pooling (→ Normalize) is the whole model and pooling is known."""
        return self.pooling in FAST_POOLING and not self.extra_modules and self.include_prompt

    @property
    def query_prompt(self) -> str:
        return self.prompts.get("query", "")


def read_json_object(path: Path, error: type[KbqaError] = EmbeddingError) -> dict[str, Any]:
    """A model directory's JSON config as a dict: {} when absent or not an object; `error` when unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise error(f"{path}: cannot read the model's config ({exc})") from exc
    return data if isinstance(data, dict) else {}





def _pooling_mode(cfg: dict[str, Any]) -> str:
    mode = cfg.get("pooling_mode")
    if mode is None:
        active = [name for key, name in _LEGACY_POOLING.items() if cfg.get(key)]
        mode = active if len(active) != 1 else active[0]
    if isinstance(mode, list):
        return mode[0] if len(mode) == 1 else ""
    return str(mode) if mode else ""


def read_st_dir(path: str | Path) -> StModelInfo:
    """Describe the model directory at `path`; `EmbeddingError` naming it if it is not one."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise EmbeddingError(f"embedding model directory not found: {root}")
    modules_file = root / "modules.json"
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8")) if modules_file.is_file() else None
    except (OSError, ValueError) as exc:
        raise EmbeddingError(f"{modules_file}: cannot read: {exc}") from exc
    if modules is None:
        if not (root / "config.json").is_file():
            raise EmbeddingError(
                f"{root} is not a sentence-transformers or transformers model directory "
                "(no modules.json or config.json)"
            )
        # a bare transformers checkpoint: sentence-transformers adds mean pooling
        modules = [{"type": "Transformer", "path": ""}]
    transformer_dir, pooling_cfg, extras, dense_out = root, {}, [], None
    for entry in modules if isinstance(modules, list) else []:
        kind = str(entry.get("type", "")).rsplit(".", 1)[-1]
        sub = root / str(entry.get("path", ""))
        if kind == "Transformer":
            transformer_dir = sub
        elif kind == "Pooling":
            pooling_cfg = read_json_object(sub / "config.json")
        elif kind == "Normalize":
            continue
        else:
            extras.append(kind)
            out = read_json_object(sub / "config.json").get("out_features")
            dense_out = int(out) if kind == "Dense" and isinstance(out, int) else dense_out
    if not (transformer_dir / "config.json").is_file():
        raise EmbeddingError(f"{root}: the transformer module has no config.json in {transformer_dir}")
    hf_cfg = read_json_object(transformer_dir / "config.json")
    sbert = (read_json_object(transformer_dir / "sentence_bert_config.json")
             or read_json_object(root / "sentence_bert_config.json"))
    st_cfg = read_json_object(root / "config_sentence_transformers.json")
    pooling = _pooling_mode(pooling_cfg) if pooling_cfg else "mean"
    width = pooling_cfg.get("embedding_dimension") or pooling_cfg.get("word_embedding_dimension") \
        or hf_cfg.get("hidden_size") or hf_cfg.get("d_model")
    dimension = dense_out if dense_out is not None else (int(width) if isinstance(width, int) and pooling else None)
    if extras and dense_out is None:
        dimension = None
    max_len = sbert.get("max_seq_length")
    prompts = st_cfg.get("prompts") if isinstance(st_cfg.get("prompts"), dict) else {}
    return StModelInfo(
        path=root,
        transformer_dir=transformer_dir,
        pooling=pooling if pooling in FAST_POOLING else "",
        dimension=dimension,
        max_seq_length=int(max_len) if isinstance(max_len, int) else None,
        do_lower_case=bool(sbert.get("do_lower_case", False)),
        include_prompt=bool(pooling_cfg.get("include_prompt", True)),
        extra_modules=tuple(extras),
        prompts={str(k): str(v) for k, v in (prompts or {}).items()},
    )
