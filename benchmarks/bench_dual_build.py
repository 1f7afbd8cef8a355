"""Full build time of the 467-page English corpus: the default model vs use-multilingual+minilm, one run.

    python benchmarks/bench_dual_build.py [--models use-multilingual use-multilingual+minilm]

Each model is loaded and warmed up first (a real first build also pays the model load, the
same for both); then a fresh knowledge base indexes benchmarks/data/en-manuals and
zh-docs. Saves benchmarks/results/build-dual.json. Shared CPUs are noisy: compare ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kbqa.config import load_settings  # noqa: E402
from kbqa.embeddings import make_embeddings  # noqa: E402
from kbqa.kb import KnowledgeBase  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["use-multilingual", "use-multilingual+minilm"])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/build-dual.json")
    args = ap.parse_args()
    rows = []
    for model in args.models:
        emb = make_embeddings(load_settings(embedding={"model": model}).embedding)
        emb.warm_up()
        emb.encode(["warm-up", "热身"])
        for corpus in ("en-manuals", "zh-docs"):
            with tempfile.TemporaryDirectory() as tmp:
                kb = KnowledgeBase.create(corpus, load_settings(home=Path(tmp), embedding={"model": model}),
                                          embeddings=emb)
                t = time.perf_counter()
                report = kb.add(ROOT / "benchmarks/data" / corpus)
                row = {"model": model, "corpus": corpus, "build_s": round(time.perf_counter() - t, 1),
                       "chunks": kb.store.count(), "files": len(report.files)}
                kb.close()
            rows.append(row)
            print(json.dumps(row), flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    args.out.write_text(json.dumps({"load_at_end": load, "rows": rows}, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
