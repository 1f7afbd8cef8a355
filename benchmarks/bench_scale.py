"""Scale benchmark: the store at 10k, 100k and 1M chunks, exact Flat vs approximate FAISS indexes.

    python benchmarks/fetch_corpus.py en-manuals zh-docs               # once: the dev corpus
    python benchmarks/eval_retrieval.py --models use-multilingual      # once: its two KBs (real chunks + vectors)
    python benchmarks/bench_scale.py                                   # 10k, 100k, 1M (about an hour on 2 cores)
    python benchmarks/bench_scale.py --sizes 10000 100000 --indexes "HNSW32,SQ8"   # a quicker look

Data. The base is the 6,044 real chunks (text, FTS terms, USE-multilingual 512-d vectors) of
the dev corpus KBs (en-manuals + zh-docs). A store of N chunks holds them and ~N/6,044 - 1
perturbed copies: text prefixed with the copy number, ~10% of its keyword terms dropped, and a
**synthetic vector** = normalise(v + t·(v_nb − v) + noise), v the chunk's real vector, v_nb one
of its 10 nearest real neighbours, t ~ U(0, 0.5), noise Gaussian with the covariance of the real
vectors (so copies vary the way real chunks do) and norm ~`--noise` (0.8: a copy is about as close
to its source, cosine ~0.78, as a real chunk is to its nearest real neighbour).
Only the 6,044 originals carry real vectors; everything beyond is synthetic and the output says
so. Queries are 200 real texts — the 104 dev-set questions (EN + ZH) and 96 snippets of base
chunks — embedded once by the real USE model and fed to kbqa's own `HybridRetriever` through an
embedding object that returns those vectors, so timings cover store + retriever, not the model.

Measured per size: the catalog build (SQLite + FTS5 through `ChunkStore.commit` in the indexer's
waves, then `flush`: manifest + save), and per index type (`store.faiss_index`) the FAISS build
from the catalog (the store's own rebuild path: training included), the disk size, the peak RSS
of each build process, and in a fresh process that opens the store: open time, peak RSS
(VmHWM), and p50/p95 over the queries of the full hybrid search, of its dense part and of its
keyword part (timed once, with Flat: it does not depend on the FAISS index), plus recall@10 of
the dense top-10 against Flat and the agreement of the hybrid top-5 with Flat's. For HNSW/IVF
indexes it also sweeps efSearch / nprobe. Timings are on a warm OS page cache (the store was
just written) and record the load average: other work on the machine slows them. Prints a
table; saves benchmarks/results/scale.json and docs/scale-latency.png, docs/scale-memory.png.
Not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kbqa.config import RetrievalSettings  # noqa: E402
from kbqa.embeddings.base import KbqaEmbeddings  # noqa: E402
from kbqa.eval import percentile  # noqa: E402
from kbqa.index import WAVE_CHUNKS, embed_text, text_key  # noqa: E402
from kbqa.schema import Chunk  # noqa: E402
from kbqa.splitter import chunk_id  # noqa: E402
from kbqa.store import CATALOG_FILE, VECTORS_FILE, ChunkStore, FileRecord, FileWrite  # noqa: E402

BASE_KBS = ROOT / "benchmarks/results/kbs/use-multilingual-default/vector_store"
CORPORA = ("en-manuals", "zh-docs")
DIM = 512
FINGERPRINT = {"embedding": {"model_id": "bench-scale-use-multilingual-v3", "dimension": DIM, "normalized": True}}
DEFAULT_INDEXES = ["HNSW32,SQ8", "HNSW32", "IVF4096,SQ8", "IVF4096,PQ64"]
SWEEPS = {"efSearch": [32, 64, 128, 256, 512], "nprobe": [16, 32, 64, 128, 256]}
GOAL = {"p95_ms": 50.0, "rss_mb": 2048.0, "recall": 0.95}


# -- the base chunks and their copies ---------------------------------------------------------
@dataclass
class Base:
    files: list[str]
    file: np.ndarray  # index into files, per chunk
    page: list[int | None]
    heading: list[str]
    start: list[int]
    text: list[str]
    terms: list[list[str]]
    vecs: np.ndarray
    neighbours: np.ndarray  # (n, 10) nearest real chunks of each chunk
    shape: np.ndarray  # noise = gaussian @ shape.T has the real vectors' covariance, scaled to E|noise|² = 1


def load_base() -> Base:
    files: list[str] = []
    rows: list[tuple[Any, ...]] = []
    for corpus in CORPORA:
        path = BASE_KBS / corpus / CATALOG_FILE
        if not path.is_file():
            raise SystemExit(f"{path}: missing; run: python benchmarks/fetch_corpus.py {' '.join(CORPORA)} && "
                             "python benchmarks/eval_retrieval.py --models use-multilingual")
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        rows += [(f"{corpus}/{r[0]}", *r[1:]) for r in db.execute(
            "SELECT c.file, c.page, c.heading, c.start, c.text, f.terms, c.vec FROM chunks c"
            " JOIN chunks_fts f ON f.rowid = c.int_id ORDER BY c.file, c.page, c.start")]
        db.close()
    files = sorted({r[0] for r in rows})
    index = {f: i for i, f in enumerate(files)}
    vecs = np.stack([np.frombuffer(r[6], dtype=np.float32) for r in rows])
    neighbours = np.empty((len(vecs), 10), dtype=np.int64)
    for at in range(0, len(vecs), 512):  # in blocks: the full similarity matrix would dwarf the store
        sims = vecs[at : at + 512] @ vecs.T
        sims[np.arange(len(sims)), np.arange(at, at + len(sims))] = -2.0
        neighbours[at : at + 512] = np.argpartition(-sims, 10, axis=1)[:, :10]
    eigval, eigvec = np.linalg.eigh(np.cov(vecs.T))
    eigval = np.clip(eigval, 0, None)
    shape = (eigvec * np.sqrt(eigval / eigval.sum())).astype(np.float32)
    return Base(files, np.array([index[r[0]] for r in rows]), [r[1] for r in rows], [r[2] for r in rows],
                [r[3] for r in rows], [r[4] for r in rows], [r[5].split() for r in rows], vecs, neighbours, shape)


def copies(base: Base, size: int, noise: float, iso: bool = False, seed: int = 0) -> Iterator[FileWrite]:
    """FileWrites of `size` chunks: the base, then perturbed copies, file by file."""
    rng = np.random.default_rng(seed)
    by_file = [np.flatnonzero(base.file == f) for f in range(len(base.files))]
    left = size
    for rep in range(math.ceil(size / len(base.text))):
        for f, idx in enumerate(by_file):
            idx = idx[:left]
            if len(idx) == 0:
                return
            name = f"copy{rep:03d}/{base.files[f]}" if rep else base.files[f]
            vecs = base.vecs[idx]
            if rep:
                nb = base.vecs[base.neighbours[idx, rng.integers(0, 10, len(idx))]]
                vecs = vecs + rng.uniform(0, 0.5, (len(idx), 1)).astype(np.float32) * (nb - vecs)
                gauss = rng.standard_normal(vecs.shape, dtype=np.float32)
                vecs = vecs + noise * (gauss / math.sqrt(DIM) if iso else gauss @ base.shape.T)
                vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            chunks, terms, keys = [], [], []
            for i in idx:
                text = f"({rep}) {base.text[i]}" if rep else base.text[i]
                hex_id, int_id = chunk_id(name, base.page[i], base.start[i], text)
                chunks.append(Chunk(hex_id, int_id, text, name, f"knowledge/bench/{name}", base.page[i],
                                    base.heading[i], base.start[i]))
                t = base.terms[i]
                if rep and len(t) > 1:
                    t = [w for w, keep in zip(t, rng.random(len(t)) >= 0.1, strict=True) if keep] or t[:1]
                terms.append(" ".join(t))
                keys.append(text_key(embed_text(base.heading[i], text)))
            sha = hashlib.sha256(name.encode()).hexdigest()
            record = FileRecord(name, sha, sum(len(c.text) for c in chunks), 0.0, split_key="bench-scale")
            yield FileWrite(record, chunks, np.ascontiguousarray(vecs, dtype=np.float32), terms, keys)
            left -= len(idx)


# -- process measurements ------------------------------------------------------------------------
def rss_mb() -> dict[str, float]:
    """Current and peak resident memory of this process (VmRSS, VmHWM), MB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return {"rss_mb": round(out["VmRSS"], 1), "peak_rss_mb": round(out["VmHWM"], 1)}


def mb(*paths: Path) -> float:
    return round(sum(p.stat().st_size for p in paths if p.exists()) / 2**20, 1)


def slug(factory: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in factory)


class _NoVectors:
    """Stands in for the FAISS index while the catalog is built (that part is timed per index type)."""

    generation = 0
    writes_through = False

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...
    def remove(self, ids: list[int]) -> None: ...
    def persist(self, generation: int) -> None:
        self.generation = generation

    def close(self) -> None: ...


class Precomputed(KbqaEmbeddings):
    """Returns the real model's vectors for the benchmark queries (no model in the timed path)."""

    model_id = "precomputed-use-multilingual-v3"

    def __init__(self, texts: list[str], vectors: np.ndarray) -> None:
        self._by_text = dict(zip(texts, vectors, strict=True))

    @property
    def dimension(self) -> int:
        return DIM

    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        return np.stack([self._by_text[t] for t in texts])


# -- subprocess steps (each prints one JSON line) -------------------------------------------------
def step_catalog(size: int, folder: Path, noise: float, iso: bool) -> dict[str, Any]:
    base = load_base()
    shutil.rmtree(folder, ignore_errors=True)
    store = ChunkStore(folder, FINGERPRINT, "Flat")
    store.vectors = _NoVectors()  # type: ignore[assignment]
    t0 = time.perf_counter()
    wave: list[FileWrite] = []
    n = 0
    for w in copies(base, size, noise, iso):
        wave.append(w)
        n += len(w.chunks)
        if sum(len(x.chunks) for x in wave) >= WAVE_CHUNKS:
            store.commit(wave)
            wave = []
    if wave:
        store.commit(wave)
    commit_s = time.perf_counter() - t0
    t = time.perf_counter()
    store.flush()
    flush_s = time.perf_counter() - t
    files = len(store.files())
    store.close()
    return {"chunks": n, "files": files, "noise": noise, "noise_shape": "iso" if iso else "cov",
            "catalog_build_s": round(commit_s + flush_s, 2),
            "flush_s": round(flush_s, 2), "catalog_mb": mb(folder / CATALOG_FILE),
            "manifest_mb": mb(folder / "manifest.json"), "catalog_build": rss_mb()}


def step_vectors(catalog_dir: Path, folder: Path, factory: str) -> dict[str, Any]:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / CATALOG_FILE).symlink_to((catalog_dir / CATALOG_FILE).resolve())
    t = time.perf_counter()
    store = ChunkStore(folder, FINGERPRINT, factory)  # no vectors file: built (and trained) from the catalog
    build_s = time.perf_counter() - t
    out = {"vector_build_s": round(build_s, 2), "vectors_mb": mb(folder / VECTORS_FILE),
           "trained": not store.vectors.needs_training, "count": store.count(), "vector_build": rss_mb()}
    store.close()
    return out


def step_serve(folder: Path, factory: str, queries: Path, truth: Path | None) -> dict[str, Any]:
    from kbqa.retriever import HybridRetriever
    from kbqa.tokenize import Tokenizer

    before = rss_mb()
    q = np.load(queries, allow_pickle=False)
    texts, qvecs = [str(t) for t in q["texts"]], q["vectors"]
    stamp = (folder / VECTORS_FILE).stat().st_mtime_ns
    t = time.perf_counter()
    store = ChunkStore(folder, FINGERPRINT, factory)
    open_s = time.perf_counter() - t
    assert (folder / VECTORS_FILE).stat().st_mtime_ns == stamp, "the store rebuilt its index instead of loading it"
    opened = rss_mb()
    tok = Tokenizer()
    retriever = HybridRetriever(store, Precomputed(texts, qvecs), tok, RetrievalSettings())
    fetch_k = retriever.settings.fetch_k
    for text, v in zip(texts[:10], qvecs[:10], strict=True):  # warm-up: jieba, SQLite pages, FAISS
        retriever.search(text)
        store.dense_search(v, 10)
    # Each part in its own pass over the queries, so one never runs on caches warmed by another.
    lat: dict[str, list[float]] = {"hybrid": [], "dense": []}
    dense_top, hybrid_top, first, tenth = [], [], [], []
    for text in texts:
        t = time.perf_counter()
        hits = retriever.search(text)
        lat["hybrid"].append((time.perf_counter() - t) * 1000)
        hybrid_top.append([h.chunk_id for h in hits])
    for v in qvecs:
        t = time.perf_counter()
        dense = store.dense_search(v, 10)
        lat["dense"].append((time.perf_counter() - t) * 1000)
        dense_top.append([i for i, _ in dense])
        first.append(dense[0][1])
        tenth.append(dense[-1][1])
    if truth is None:  # the keyword part does not depend on the FAISS index: timed once, with Flat
        lat["keyword"] = []
        for text in texts:
            terms = tok.query_terms(text)
            t = time.perf_counter()
            store.keyword_search(terms, fetch_k)
            lat["keyword"].append((time.perf_counter() - t) * 1000)
    out: dict[str, Any] = {"open_s": round(open_s, 2), "trained": not store.vectors.needs_training,
                           "rss_before_open_mb": before["rss_mb"], "rss_after_open_mb": opened["rss_mb"],
                           "queries": len(texts), "nn_cosine_median": {"top1": round(float(np.median(first)), 3),
                                                                      "top10": round(float(np.median(tenth)), 3)}}
    for part, values in lat.items():
        out[f"{part}_p50_ms"] = round(percentile(values, 0.5), 2)
        out[f"{part}_p95_ms"] = round(percentile(values, 0.95), 2)
    out["serve"] = rss_mb()
    if truth is None:
        out["dense_top"], out["hybrid_top"] = dense_top, hybrid_top
        return out
    gold = json.loads(truth.read_text())
    out["recall@10"] = round(recall(dense_top, gold["dense_top"]), 4)
    out["hybrid_top5_agreement"] = round(recall(hybrid_top, gold["hybrid_top"]), 4)
    out["sweep"] = sweep(store, qvecs, gold["dense_top"])
    store.close()
    return out


def recall(got: list[list[Any]], want: list[list[Any]]) -> float:
    return float(np.mean([len(set(g) & set(w)) / max(1, len(w)) for g, w in zip(got, want, strict=True)]))


def sweep(store: ChunkStore, qvecs: np.ndarray, gold: list[list[int]]) -> list[dict[str, Any]]:
    """Dense recall@10 and latency for a range of efSearch / nprobe (kbqa's default marked)."""
    import faiss

    index = store.vectors.index
    inner = faiss.downcast_index(index.index)
    if store.vectors.needs_training:
        return []
    ivf = faiss.try_extract_index_ivf(inner)
    if isinstance(inner, faiss.IndexHNSW):
        name, default = "efSearch", inner.hnsw.efSearch
    elif ivf is not None:
        name, default = "nprobe", ivf.nprobe
    else:
        return []
    space = faiss.ParameterSpace()
    rows = []
    for value in SWEEPS[name]:
        space.set_index_parameter(index, name, value)
        lat, top = [], []
        for v in qvecs:
            t = time.perf_counter()
            top.append([i for i, _ in store.dense_search(v, 10)])
            lat.append((time.perf_counter() - t) * 1000)
        rows.append({name: value, "default": value == default, "recall@10": round(recall(top, gold), 4),
                     "dense_p50_ms": round(percentile(lat, 0.5), 2), "dense_p95_ms": round(percentile(lat, 0.95), 2)})
    space.set_index_parameter(index, name, default)
    return rows


# -- orchestration -----------------------------------------------------------------------------
def run_step(*args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"step {args} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def make_queries(base: Base, path: Path, n: int) -> None:
    """n query texts (dev-set questions first, then chunk snippets) and their real USE vectors."""
    from kbqa.config import EmbeddingSettings
    from kbqa.embeddings import make_embeddings

    texts: list[str] = []
    for name in ("dev_en.jsonl", "dev_zh.jsonl"):
        lines = (ROOT / "eval" / name).read_text(encoding="utf-8").splitlines()
        texts += [json.loads(line)["question"] for line in lines if line.strip()]
    rng = np.random.default_rng(1)
    while len(texts) < n:
        chunk = base.text[int(rng.integers(len(base.text)))]
        words = chunk.split()
        if len(words) >= 12:
            at = int(rng.integers(0, len(words) - 10))
            snippet = " ".join(words[at : at + 10])
        else:
            at = int(rng.integers(0, max(1, len(chunk) - 24)))
            snippet = chunk[at : at + 24]
        if snippet.strip() and snippet not in texts:
            texts.append(snippet)
    texts = list(dict.fromkeys(texts[:n]))
    model = make_embeddings(EmbeddingSettings(model="use-multilingual"))
    vectors = model.encode_queries(texts)
    np.savez(path, texts=np.array(texts), vectors=vectors, model=np.array(model.model_id))


def bench(args: argparse.Namespace) -> dict[str, Any]:
    work: Path = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    base = load_base()
    queries = work / "queries.npz"
    if not queries.exists():
        make_queries(base, queries, args.queries)
    shape = " with the covariance of the real vectors" if args.noise_shape == "cov" else ", isotropic"
    results: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_avg_at_start": os.getloadavg()},
        "base_chunks": len(base.text), "noise": args.noise, "noise_shape": args.noise_shape,
        "synthetic": f"only the {len(base.text)} base chunks carry real USE vectors; every chunk beyond them "
                     f"has a synthetic vector (a real vector moved towards a real neighbour plus Gaussian "
                     f"noise of norm ~{args.noise}{shape}, renormalised) and perturbed text",
        "queries": "dev-set questions (EN+ZH) + chunk snippets, real USE query vectors",
        "goal_1m": GOAL, "sizes": [],
    }
    indexes = ["Flat", *[f for f in args.indexes if f != "Flat"]]
    for size in args.sizes:
        folder = work / f"n{size}"
        catalog_dir = folder / "catalog"
        print(f"[{size:,}] catalog build ...", flush=True)
        meta = folder / "catalog.json"
        cat = json.loads(meta.read_text()) if args.reuse and meta.exists() else {}
        if not ((catalog_dir / CATALOG_FILE).exists() and cat.get("chunks") == size
                and (cat.get("noise"), cat.get("noise_shape")) == (args.noise, args.noise_shape)):
            cat = run_step("_catalog", str(size), str(catalog_dir), str(args.noise), args.noise_shape)
            meta.write_text(json.dumps(cat))
        cat["load_avg"] = os.getloadavg()
        row: dict[str, Any] = {"size": size, **cat, "indexes": []}
        truth = folder / "flat_truth.json"
        for factory in indexes:
            if size in args.skip.get(factory, ()):
                continue
            vdir = folder / slug(factory)
            print(f"[{size:,}] {factory}: build ...", flush=True)
            built = run_step("_vectors", str(catalog_dir), str(vdir), factory)
            print(f"[{size:,}] {factory}: built in {built['vector_build_s']} s; serve ...", flush=True)
            served = run_step("_serve", str(vdir), factory, str(queries), *([] if factory == "Flat" else [str(truth)]))
            if factory == "Flat":
                truth.write_text(json.dumps({"dense_top": served.pop("dense_top"),
                                             "hybrid_top": served.pop("hybrid_top")}))
                served["recall@10"], served["hybrid_top5_agreement"] = 1.0, 1.0
            if factory != "Flat":
                flat = row["indexes"][0]
                served.update(keyword_p50_ms=flat["keyword_p50_ms"], keyword_p95_ms=flat["keyword_p95_ms"])
            entry = {"index": factory, **built, **served, "load_avg": os.getloadavg(),
                     "build_s": round(cat["catalog_build_s"] + built["vector_build_s"], 2),
                     "disk_mb": round(cat["catalog_mb"] + cat["manifest_mb"] + built["vectors_mb"], 1)}
            row["indexes"].append(entry)
            print(table_line(size, entry), flush=True)
            if not args.keep and factory != "Flat":
                shutil.rmtree(vdir, ignore_errors=True)
        results["sizes"].append(row)
        if not args.keep:
            shutil.rmtree(folder / "Flat", ignore_errors=True)
        args.out.write_text(json.dumps(results, indent=1))  # after every size: a cut run keeps its figures
    return results


HEAD = (f"{'size':>9} {'index':<14} {'build s':>8} {'disk MB':>8} {'bld RSS':>8} {'srv RSS':>8} "
        f"{'hyb p50':>8} {'hyb p95':>8} {'dns p50':>8} {'dns p95':>8} {'kw p95':>7} {'rec@10':>7} {'top5=':>6}")


def table_line(size: int, e: dict[str, Any]) -> str:
    name = e["index"] + ("" if e["trained"] else "*")
    return (f"{size:>9,} {name:<14} {e['build_s']:>8.1f} {e['disk_mb']:>8.0f} {e['vector_build']['peak_rss_mb']:>8.0f} "
            f"{e['serve']['peak_rss_mb']:>8.0f} {e['hybrid_p50_ms']:>8.1f} {e['hybrid_p95_ms']:>8.1f} "
            f"{e['dense_p50_ms']:>8.2f} {e['dense_p95_ms']:>8.2f} {e['keyword_p95_ms']:>7.1f} {e['recall@10']:>7.3f} "
            f"{e['hybrid_top5_agreement']:>6.3f}")


def report(results: dict[str, Any]) -> None:
    print()
    print(HEAD)
    for row in results["sizes"]:
        for e in row["indexes"]:
            print(table_line(row["size"], e))
    print("(* = not trained yet: the index searches its exact buffer; RSS in MB; bld RSS = peak of the FAISS build "
          "from the catalog; srv RSS = peak of a fresh process that opens the store and runs the queries)")
    for row in results["sizes"]:
        print(f"{row['size']:>9,}: catalog build {row['catalog_build_s']} s (flush {row['flush_s']} s), "
              f"peak RSS {row['catalog_build']['peak_rss_mb']:.0f} MB, catalog {row['catalog_mb']:.0f} MB")
        for e in row["indexes"]:
            for s in e.get("sweep", []):
                knob = "efSearch" if "efSearch" in s else "nprobe"
                print(f"{'':>11}{e['index']:<14} {knob}={s[knob]:<4} recall@10 {s['recall@10']:.3f} "
                      f"dense p50 {s['dense_p50_ms']:.2f} p95 {s['dense_p95_ms']:.2f} ms{' (default)' * s['default']}")
    print(results["synthetic"])


def plot(results: dict[str, Any], docs: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    series: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for row in results["sizes"]:
        for e in row["indexes"]:
            series.setdefault(e["index"], []).append((row["size"], e))

    def draw(ax: Any, key: Any) -> None:
        for n, (name, points) in enumerate(series.items()):
            colour = f"C{n}"
            xs, ys = [p[0] for p in points], [key(p[1]) for p in points]
            ax.plot(xs, ys, color=colour, label=name)
            for x, y, (_, e) in zip(xs, ys, points, strict=True):  # hollow: untrained, exact buffer search
                ax.plot(x, y, "o", color=colour, mfc=colour if e["trained"] else "white")
        ax.set_xscale("log")
        ax.set_xlabel("chunks in the store")
        ax.grid(True, which="both", alpha=0.3)

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    parts = (("hybrid_p95_ms", "hybrid search p95 (what users wait for)"), ("dense_p95_ms", "its dense (FAISS) part"),
             ("keyword_p95_ms", "its keyword (SQLite FTS5 BM25) part"))
    for ax, (key, title) in zip(axes, parts, strict=True):
        if key == "keyword_p95_ms":  # the same for every index type: one line
            flat = series["Flat"]
            ax.plot([p[0] for p in flat], [p[1][key] for p in flat], "o-", color="black", label="every index type")
            ax.set_xscale("log")
            ax.set_xlabel("chunks in the store")
            ax.grid(True, which="both", alpha=0.3)
        else:
            draw(ax, lambda e, key=key: e[key])
        ax.axhline(GOAL["p95_ms"], color="grey", ls="--", lw=1, label="goal at 1M: 50 ms")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(v)[0] in "25" else ""))
        ax.set(ylabel="p95, ms", title=title)
    axes[0].legend(fontsize=8)
    fig.suptitle("kbqa search latency vs store size: 200 queries, 1 thread per query, 2-core CPU "
                 "(hollow = index not trained yet: exact search); vectors beyond the 6k real ones are synthetic",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(docs / "scale-latency.png", dpi=110)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    draw(axes[0], lambda e: e["serve"]["peak_rss_mb"])
    axes[0].set(ylabel="peak RSS, MB", title="a fresh process: open the store + 200 searches")
    draw(axes[1], lambda e: e["vector_build"]["peak_rss_mb"])
    axes[1].set(ylabel="peak RSS, MB", title="building the FAISS index from the catalog")
    for ax in axes:
        ax.axhline(GOAL["rss_mb"], color="grey", ls="--", lw=1, label="goal at 1M: 2 GB")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(docs / "scale-memory.png", dpi=110)


def markdown(results: dict[str, Any]) -> str:
    """The table of docs/scale.md."""
    lines = ["| chunks | store.faiss_index | build s (catalog + FAISS) | disk MB | build RSS MB | serve RSS MB "
             "| hybrid p50 / p95 ms | dense p50 / p95 ms | keyword p95 ms | recall@10 | top-5 = Flat |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in results["sizes"]:
        for e in row["indexes"]:
            name = e["index"] + ("" if e["trained"] else " (untrained: exact)")
            build_rss = max(row["catalog_build"]["peak_rss_mb"], e["vector_build"]["peak_rss_mb"])
            lines.append(
                f"| {row['size']:,} | `{name}` | {e['build_s']:.0f} ({row['catalog_build_s']:.0f} + "
                f"{e['vector_build_s']:.0f}) | {e['disk_mb']:,.0f} | {build_rss:,.0f} "
                f"| {e['serve']['peak_rss_mb']:,.0f} | {e['hybrid_p50_ms']:.1f} / {e['hybrid_p95_ms']:.1f} "
                f"| {e['dense_p50_ms']:.2f} / {e['dense_p95_ms']:.2f} "
                f"| {e['keyword_p95_ms']:.1f} | {e['recall@10']:.3f} | {e['hybrid_top5_agreement']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        step, rest = sys.argv[1], sys.argv[2:]
        if step == "_catalog":
            out = step_catalog(int(rest[0]), Path(rest[1]), float(rest[2]), rest[3] == "iso")
        elif step == "_vectors":
            out = step_vectors(Path(rest[0]), Path(rest[1]), rest[2])
        else:
            out = step_serve(Path(rest[0]), rest[1], Path(rest[2]), Path(rest[3]) if len(rest) > 3 else None)
        print(json.dumps(out))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--indexes", nargs="+", default=DEFAULT_INDEXES,
                    help="store.faiss_index values to compare with Flat (always measured, the baseline)")
    ap.add_argument("--skip", nargs="*", default=["HNSW32@1000000"], metavar="INDEX@SIZE",
                    help="pairs to leave out (default: HNSW32 at 1M, whose full-precision vectors alone are the 2 GB "
                         "of Flat; '--skip' with nothing measures it too)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--noise", type=float, default=0.8, help="norm of the Gaussian noise on synthetic vectors")
    ap.add_argument("--noise-shape", choices=["cov", "iso"], default="cov",
                    help="cov: noise with the covariance of the real vectors; iso: isotropic (harder for ANN)")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "kbqa-scale")
    ap.add_argument("--reuse", action="store_true", help="reuse catalogs already built in --workdir")
    ap.add_argument("--keep", action="store_true", help="keep every built index in --workdir")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/scale.json")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs")
    ap.add_argument("--replot", action="store_true", help="only print the table and redraw the plots of --out")
    args = ap.parse_args()
    skip: dict[str, set[int]] = {}
    for item in args.skip:
        factory, _, size = item.rpartition("@")
        skip.setdefault(factory, set()).add(int(size))
    args.skip = skip
    if args.replot:
        results = json.loads(args.out.read_text())
    else:
        results = bench(args)
        results["command"] = " ".join(["python benchmarks/bench_scale.py", *sys.argv[1:]])
        args.out.write_text(json.dumps(results, indent=1))
    report(results)
    print()
    print(markdown(results))
    plot(results, args.docs)
    print(f"{args.out}; plots: {args.docs / 'scale-latency.png'}, {args.docs / 'scale-memory.png'}")


if __name__ == "__main__":
    main()
