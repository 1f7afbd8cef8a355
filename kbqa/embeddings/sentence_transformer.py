"""Local sentence-transformers models (the bundled all-MiniLM-L6-v2, or a downloaded bge/m3e dir).

On the CPU we run the ONNX Runtime fast path (`onnx_runtime.py`): float32 ONNX is ~2x stock
torch on the same maths, int8 another ~2x. On a GPU, with `backend='torch'`, or when the model's
module stack is not one we reimplement (e.g. a Dense head), stock sentence-transformers runs it;
on CPUs with native bfloat16 under `torch.autocast` (cosine to fp32 0.99998, ~1.7x).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np

from kbqa.embeddings.base import (
    KbqaEmbeddings,
    LazyModel,
    cpu_has_fast_bf16,
    loader_errors,
    physical_cores,
    resolve_device,
)
from kbqa.embeddings.st_config import StModelInfo, read_st_dir
from kbqa.errors import DependencyMissingError, EmbeddingError

log = logging.getLogger(__name__)

Backend = Literal["auto", "onnx", "torch"]


class SentenceTransformerEmbeddings(LazyModel, KbqaEmbeddings):
    """A sentence-transformers model directory on disk; never downloads anything.

    `model_id` is ``st:<name>`` plus ``+int8`` when the int8 ONNX graph is what runs, so an
    index built with quantised vectors is told apart from a float32 one. `quantize` only applies
    to the CPU ONNX path; `cache_dir` holds the exported graphs (default ~/.cache/kbqa/onnx).
    """

    def __init__(self, path: str | Path, *, name: str | None = None, device: str = "auto",
                 batch_size: int = 64, quantize: bool = True, backend: Backend = "auto",
                 cache_dir: str | Path | None = None) -> None:
        LazyModel.__init__(self)
        if backend not in ("auto", "onnx", "torch"):
            raise EmbeddingError(f"backend must be 'auto', 'onnx' or 'torch', got {backend!r}")
        self.info: StModelInfo = read_st_dir(path)
        self.name = name or self.info.path.name
        self.device_setting = device
        self.batch_size = batch_size
        self.quantize = quantize
        self.backend = backend
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self.query_prompt = self.info.query_prompt
        self._dimension = self.info.dimension
        self._variant: str | None = None
        self._runner: Any = None
        self.runtime = "not loaded"
        """What actually runs, e.g. 'onnx-int8 on cpu' or 'torch-fp32 on cuda'."""

    # -- identity ---------------------------------------------------------------------------

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self._ensure_loaded()
        assert self._dimension is not None
        return self._dimension

    @property
    def model_id(self) -> str:  # type: ignore[override]
        variant = self._variant or self._planned_variant()
        return f"st:{self.name}" + ("+int8" if variant.startswith("int8") else "")

    def _planned_variant(self) -> str:
        """The numeric variant that will run, found without loading where possible."""
        if not (self.quantize and self.backend != "torch" and self.info.onnx_compatible):
            return "fp32"
        if self.device_setting.strip().lower() != "cpu" and resolve_device(self.device_setting) != "cpu":
            return "fp32"
        from kbqa.embeddings import onnx_runtime

        with contextlib.suppress(OSError):
            cached = onnx_runtime.cached_variant(onnx_runtime.cache_folder(self.info, self.cache_dir), True)
            if cached is not None:
                return cached.variant
        self._ensure_loaded()
        assert self._variant is not None
        return self._variant

    # -- loading ------------------------------------------------------------------------------

    def warm_up(self) -> None:
        self._ensure_loaded()

    def _load(self) -> None:
        device = resolve_device(self.device_setting)
        use_onnx = device == "cpu" and self.backend != "torch" and self.info.onnx_compatible
        if self.backend == "onnx" and not use_onnx:
            raise EmbeddingError(f"{self.info.path}: the ONNX backend needs device 'cpu' and a "
                                 "Transformer → Pooling (→ Normalize) model")
        if use_onnx:
            try:
                self._load_onnx()
                return
            except ImportError as exc:
                if self.backend == "onnx":
                    raise DependencyMissingError(exc.name or "onnx", "the ONNX embedding backend") from exc
                log.warning("ONNX fast path unavailable (%s: pip install onnx onnxruntime); "
                            "running %s with torch", exc, self.info.path.name)
            except loader_errors() as exc:
                if self.backend == "onnx":
                    raise EmbeddingError(f"{self.info.path}: ONNX export failed: {exc}") from exc
                log.warning("ONNX export of %s failed (%s); running it with torch", self.info.path, exc)
        self._load_torch(device)

    def _load_onnx(self) -> None:
        from kbqa.embeddings import onnx_runtime

        folder = onnx_runtime.cache_folder(self.info, self.cache_dir)
        model = onnx_runtime.build(self.info, folder, self.quantize, physical_cores())
        self._runner = onnx_runtime.OnnxEncoder(model.path, self.info, physical_cores())
        self._variant = model.variant
        self.runtime = f"onnx-{model.variant} on cpu"
        if self._dimension is None:
            self._dimension = int(self._runner.encode([""], 1).shape[1])

    def _load_torch(self, device: str) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        try:
            model = SentenceTransformer(str(self.info.path), device=device, local_files_only=True)
        except loader_errors() as exc:
            raise EmbeddingError(f"cannot load embedding model from {self.info.path}: {exc}") from exc
        model.eval()
        bf16 = device == "cpu" and cpu_has_fast_bf16()
        self._runner = _TorchRunner(model, torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else None)
        self._variant = "fp32"
        self.runtime = f"torch-{'bf16-autocast' if bf16 else 'fp32'} on {device}"
        if self._dimension is None:
            dim = model.get_sentence_embedding_dimension()
            self._dimension = int(dim) if dim else int(self._runner.encode([""], 1).shape[1])

    # -- encoding -----------------------------------------------------------------------------

    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        self._ensure_loaded()
        return self._runner.encode(texts, batch_size)  # type: ignore[no-any-return]


class _TorchRunner:
    """Stock sentence-transformers encode (it sorts by length itself), optionally under autocast."""

    def __init__(self, model: Any, autocast: Any) -> None:
        self.model = model
        self.autocast = autocast

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        import torch

        ctx = self.autocast if self.autocast is not None else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            out = self.model.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                                    normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)
