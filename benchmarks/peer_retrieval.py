"""Retrieval quality and build time: kbqa vs the classic langchain-ChatGLM pipeline, same run.

    python benchmarks/fetch_corpus.py en-manuals zh-docs      # once
    python benchmarks/peer_retrieval.py                       # USE-multilingual, EN + ZH
    python benchmarks/peer_retrieval.py --models use-multilingual minilm   # + MiniLM on EN

The classic pipeline is what langchain-ChatGLM did: one Document per PDF page
(`PyPDFLoader`), text files whole (`TextLoader`), HTML as its visible text
(`BSHTMLLoader`) → `RecursiveCharacterTextSplitter(chunk_size=250, chunk_overlap=50)` →
`langchain_community` `FAISS.from_documents` → `similarity_search(q, k)`. It gets the very
same embedding object as kbqa (a langchain `Embeddings`), already loaded, so the figures
compare the pipelines, not the models. kbqa builds a fresh knowledge base with its default
settings in a temporary folder. Both are scored by `kbqa.eval.evaluate_retrieval` (a hit
is a source from the gold file on a gold page; for files without pages, one whose text
holds every `must_contain` string).

Prints hit@5, MRR and build time for each and ours/theirs ratios; saves
benchmarks/results/peer.json and draws docs/tuning-peer.png (`--replot` redraws it from the JSON).
Not a test: times depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kbqa.config import load_settings  # noqa: E402
from kbqa.embeddings import KbqaEmbeddings, make_embeddings  # noqa: E402
from kbqa.eval import evaluate_retrieval, load_questions  # noqa: E402
from kbqa.kb import KnowledgeBase  # noqa: E402
from kbqa.schema import Source  # noqa: E402

SETS = {"en": ("en-manuals", ROOT / "eval/dev_en.jsonl"), "zh": ("zh-docs", ROOT / "eval/dev_zh.jsonl")}
LANGS_OF = {"minilm": ["en"]}  # English-only models


def classic_load(folder: Path) -> list[Any]:
    """langchain-ChatGLM's loading: a Document per PDF page, other text files whole."""
    from langchain_community.document_loaders import BSHTMLLoader, PyPDFLoader, TextLoader

    docs: list[Any] = []
    for path in sorted(folder.rglob("*")):
        suffix = path.suffix.lower()
        if suffix == ".pdf":
            docs.extend(PyPDFLoader(str(path)).load())
        elif suffix in (".txt", ".md"):
            docs.extend(TextLoader(str(path), autodetect_encoding=True).load())
        elif suffix in (".html", ".htm"):
            docs.extend(BSHTMLLoader(str(path), open_encoding="utf-8").load())
    return docs


def build_classic(folder: Path, emb: KbqaEmbeddings) -> tuple[Any, dict[str, Any]]:
    from langchain_community.vectorstores import FAISS
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    t = time.perf_counter()
    docs = classic_load(folder)
    chunks = RecursiveCharacterTextSplitter(chunk_size=250, chunk_overlap=50).split_documents(docs)
    store = FAISS.from_documents(chunks, emb)
    build_s = time.perf_counter() - t
    return store, {"docs": len(docs), "chunks": len(chunks), "build_s": round(build_s, 2)}


def classic_search(store: Any) -> Any:
    """`similarity_search` top-k as kbqa `Source`s (PyPDFLoader pages are 0-based)."""

    def search(query: str, k: int) -> list[Source]:
        out = []
        for n, (doc, dist) in enumerate(store.similarity_search_with_score(query, k=k), 1):
            page = doc.metadata.get("page")
            path = str(doc.metadata.get("source", ""))
            out.append(Source(n, Path(path).name, path, None if page is None else int(page) + 1, "",
                              float(-dist), doc.page_content))
        return out

    return search


def build_ours(folder: Path, corpus: str, model: str, emb: KbqaEmbeddings, home: Path) -> tuple[Any, dict[str, Any]]:
    settings = load_settings(home=home, embedding={"model": model})
    kb = KnowledgeBase.create(corpus, settings, embeddings=emb)
    t = time.perf_counter()
    report = kb.add(folder)
    build_s = time.perf_counter() - t
    return kb, {"files": len(report.files), "failed": len(report.failed), "chunks": kb.store.count(),
                "build_s": round(build_s, 2)}


def scores(report: Any) -> dict[str, Any]:
    d = report.to_json()
    return {k: d[k] for k in ("questions", "hit@1", "hit@3", "hit@5", "hit@10", "mrr", "search_p50_ms", "misses")}


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def plot(result: dict[str, Any], out: Path) -> None:
    """Grouped bars: hit@5 and MRR of kbqa and the classic pipeline per model and language."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = result["rows"]
    labels = [f"{r['model'].replace('st:', '').replace('+int8', '')}\n{r['lang'].upper()}" for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 2.2 * len(rows)), 3.8), dpi=110)
    bars = [("kbqa", "hit@5", "#4C78A8", 1.0), ("classic", "hit@5", "#F58518", 1.0),
            ("kbqa", "mrr", "#4C78A8", 0.55), ("classic", "mrr", "#F58518", 0.55)]
    for i, (who, key, color, alpha) in enumerate(bars):
        b = ax.bar(x + (i - 1.5) * 0.2, [r[who][key] for r in rows], 0.2, color=color, alpha=alpha,
                   label=f"{'kbqa' if who == 'kbqa' else 'classic langchain 250/50'} {key}")
        ax.bar_label(b, fmt="%.2f", fontsize=7)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    ax.set_title("Retrieval on the dev set: kbqa vs the classic langchain-ChatGLM pipeline", fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    print(f"drew {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["use-multilingual"])
    ap.add_argument("--langs", nargs="+", default=["en", "zh"])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/peer.json")
    ap.add_argument("--plot", type=Path, default=ROOT / "docs/tuning-peer.png")
    ap.add_argument("--replot", action="store_true", help="only redraw --plot from --out")
    args = ap.parse_args()
    if args.replot:
        plot(json.loads(args.out.read_text(encoding="utf-8")), args.plot)
        return
    logging.getLogger("pypdf").setLevel(logging.ERROR)  # PyPDFLoader's parse warnings flood the output
    warnings.filterwarnings("ignore", message=".*(XML document|sunset).*")
    rows: list[dict[str, Any]] = []
    for model in args.models:
        emb = make_embeddings(load_settings(embedding={"model": model}).embedding)
        emb.warm_up()
        emb.embed_query("warm-up")
        for lang in args.langs:
            if lang not in LANGS_OF.get(model, ["en", "zh"]):
                continue
            corpus, qfile = SETS[lang]
            folder = ROOT / "benchmarks/data" / corpus
            if not folder.is_dir():
                raise SystemExit(f"{folder}: missing; run: python benchmarks/fetch_corpus.py {corpus}")
            questions = load_questions(qfile)
            with tempfile.TemporaryDirectory() as tmp:
                kb, ours = build_ours(folder, corpus, model, emb, Path(tmp))
                ours.update(scores(evaluate_retrieval(questions, kb.search)))
                kb.close()
            store, theirs = build_classic(folder, emb)
            theirs.update(scores(evaluate_retrieval(questions, classic_search(store))))
            row = {"model": emb.model_id, "lang": lang, "kbqa": ours, "classic": theirs,
                   "ratio_hit@5": ratio(ours["hit@5"], theirs["hit@5"]),
                   "ratio_mrr": ratio(ours["mrr"], theirs["mrr"]),
                   "ratio_build_s": ratio(ours["build_s"], theirs["build_s"])}
            rows.append(row)
            for name, r in (("kbqa", ours), ("classic", theirs)):
                print(f"{emb.model_id:<26} {lang} {name:<8} hit@5 {r['hit@5']:.3f} MRR {r['mrr']:.3f} "
                      f"build {r['build_s']:7.1f} s  chunks {r['chunks']}", flush=True)
            print(f"{'':<26} {lang} ours/theirs hit@5 {row['ratio_hit@5']}  MRR {row['ratio_mrr']}  "
                  f"build {row['ratio_build_s']}", flush=True)
    result = {"machine": f"{platform.machine()} {os.cpu_count()} cpu", "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"saved {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    plot(result, args.plot)


if __name__ == "__main__":
    main()
