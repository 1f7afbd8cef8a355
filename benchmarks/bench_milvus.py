"""FAISS vs Milvus Lite as kbqa's vector backend: build, open, search and update at 6k and 100k vectors.

    python benchmarks/bench_milvus.py                                # 6k + 100k, 512-d (~3 min on 2 cores)
    python benchmarks/bench_milvus.py --sizes 6000 --queries 100     # a quick look
    python benchmarks/bench_milvus.py --milvus-index HNSW            # Milvus Lite with an HNSW index

Data: synthetic unit vectors, 512-d (the bundled USE model's width), drawn around 200 Gaussian
cluster centres so neighbours are meaningful; queries are stored vectors plus noise. Nothing is
embedded: this times only the vector half of the store (`kbqa.store.backends.VectorBackend`),
driven the way `ChunkStore` drives it:

- build: `add` in the catalog's 50,000-row batches, then `persist` (FAISS writes its file;
  Milvus records the generation) — what a rebuild from the catalog or `kbqa migrate` costs;
- open: a fresh backend on the persisted data (FAISS reads the file; Milvus Lite starts its
  in-process server, opens the collection and counts it);
- search: p50/p95 of one query for the retriever's `fetch_k` = 40 candidates, and recall@10
  against exact numpy search;
- update: one file's re-index (remove 20 ids, add 20 vectors, record the generation), the
  per-commit cost of incremental indexing (FAISS saves its file at flush, timed separately).

Both run in this process on the same CPU; the load average is recorded since other work slows
either. Saves benchmarks/results/milvus.json. Not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kbqa.eval import percentile  # noqa: E402
from kbqa.store.backends import VectorBackend, parse_vector_uri  # noqa: E402
from kbqa.store.vectors import VectorIndex  # noqa: E402

DIM = 512
FETCH_K = 40
BATCH = 50_000  # Catalog.iter_vectors' batch


def synthetic(n: int, seed: int = 0, clusters: int = 200) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, DIM)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 1.2 * rng.normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def open_backend(kind: str, folder: Path, milvus_index: str) -> VectorBackend:
    if kind == "faiss":
        path = folder / "vectors.faiss"
        return VectorIndex.load(path, DIM, "Flat") or VectorIndex(DIM, "Flat", path)
    from kbqa.store.milvus import MilvusVectors

    return MilvusVectors(parse_vector_uri("milvus-lite"), folder, "kbqa_bench", DIM, "bench", index_type=milvus_index)


def disk_mb(folder: Path) -> float:
    return round(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6, 1)


def bench(kind: str, x: np.ndarray, queries: np.ndarray, exact10: np.ndarray, milvus_index: str) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-"))
    ids = np.arange(1, len(x) + 1, dtype=np.int64) * 7919  # sparse, like hashed chunk ids
    try:
        t = time.perf_counter()
        backend = open_backend(kind, folder, milvus_index)
        for start in range(0, len(x), BATCH):
            backend.add(ids[start : start + BATCH], x[start : start + BATCH])
        backend.persist(1)
        build_s = time.perf_counter() - t
        backend.close()

        t = time.perf_counter()
        backend = open_backend(kind, folder, milvus_index)
        open_s = time.perf_counter() - t
        assert backend.size == len(x) and backend.generation == 1, (backend.size, backend.generation)

        backend.search(queries[0], FETCH_K)  # warm-up
        times, hits10 = [], 0
        for q, truth in zip(queries, exact10, strict=True):
            t = time.perf_counter()
            hits = backend.search(q, FETCH_K)
            times.append((time.perf_counter() - t) * 1000)
            hits10 += len({i for i, _ in hits[:10]} & {int(ids[j]) for j in truth})

        updates, saves = [], []
        rng = np.random.default_rng(1)
        for gen in range(2, 12):
            old = ids[rng.choice(len(ids), 20, replace=False)]
            t = time.perf_counter()
            backend.remove([int(i) for i in old])
            backend.add(old, x[rng.choice(len(x), 20)])
            if backend.writes_through:
                backend.persist(gen)
            updates.append((time.perf_counter() - t) * 1000)
            if not backend.writes_through:
                t = time.perf_counter()
                backend.persist(gen)
                saves.append((time.perf_counter() - t) * 1000)
        backend.close()
        return {
            "backend": kind if kind == "faiss" else f"milvus-lite ({milvus_index})",
            "build_s": round(build_s, 2),
            "open_s": round(open_s, 3),
            "disk_mb": disk_mb(folder),
            "search_p50_ms": round(percentile(times, 0.5), 2),
            "search_p95_ms": round(percentile(times, 0.95), 2),
            "recall@10": round(hits10 / (10 * len(queries)), 4),
            "update_20_p50_ms": round(percentile(updates, 0.5), 2),
            **({"flush_save_p50_ms": round(percentile(saves, 0.5), 1)} if saves else {}),
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[6_000, 100_000])
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--milvus-index", default="FLAT", help="Milvus index type (FLAT, HNSW, IVF_FLAT, …)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/milvus.json")
    args = parser.parse_args()
    import milvus_lite
    import pymilvus

    result: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_avg_at_start": list(os.getloadavg())},
        "versions": {"pymilvus": pymilvus.__version__, "milvus_lite": milvus_lite.__version__},
        "dimension": DIM, "fetch_k": FETCH_K,
        "data": "synthetic unit vectors around 200 Gaussian centres; queries = stored vectors + noise",
        "command": " ".join(["python", "benchmarks/bench_milvus.py", *sys.argv[1:]]),
        "sizes": [],
    }
    print(f"{'size':>8} {'backend':<20} {'build s':>8} {'open s':>7} {'MB':>6} {'p50 ms':>7} {'p95 ms':>7} "
          f"{'recall':>6} {'update ms':>9}")
    for n in args.sizes:
        x = synthetic(n)
        rng = np.random.default_rng(2)
        queries = x[rng.choice(n, args.queries, replace=False)] + 0.05 * rng.normal(size=(args.queries, DIM))
        queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
        exact10 = np.argsort(-(queries @ x.T), axis=1)[:, :10]
        rows = [bench(kind, x, queries, exact10, args.milvus_index) for kind in ("faiss", "milvus-lite")]
        result["sizes"].append({"size": n, "load_avg": list(os.getloadavg()), "backends": rows})
        for r in rows:
            print(f"{n:>8} {r['backend']:<20} {r['build_s']:>8} {r['open_s']:>7} {r['disk_mb']:>6} "
                  f"{r['search_p50_ms']:>7} {r['search_p95_ms']:>7} {r['recall@10']:>6} {r['update_20_p50_ms']:>9}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"saved {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()
