"""Tuning sweeps on the bilingual dev set: one sub-command per parameter, one plot each.

    python benchmarks/fetch_corpus.py en-manuals zh-docs      # once
    python benchmarks/sweep_params.py chunks      # chunk size/overlap (builds one KB pair per setting)
    python benchmarks/sweep_params.py fusion      # linear dense:keyword weight ratio, cosine mapping, RRF
    python benchmarks/sweep_params.py depth       # hit@k for k = 1..20, and fetch_k
    python benchmarks/sweep_params.py model       # USE-multilingual vs MiniLM (EN) per retrieval mode
    python benchmarks/sweep_params.py threshold   # plot of benchmarks/results/refusal-<model>.json
    python benchmarks/sweep_params.py misses      # where the gold chunk of each hit@5 miss ranks
    python benchmarks/sweep_params.py compare --set fusion=rrf dense_weight=0.25   # paired, with CIs

Every sweep except `chunks` reuses the knowledge bases under benchmarks/results/kbs/ that
eval_retrieval.py builds (`<model>-default`; `--tag c800o120` picks one `chunks` built);
`chunks` builds `<model>-c<size>o<overlap>` for sizes other than the shipped one
(incremental: a second run embeds nothing). Each sweep prints a Markdown table, saves
benchmarks/results/tuning-<name>.json and draws docs/tuning-<name>.png (`compare` draws
nothing). Settings not being swept are the shipped defaults (kbqa/default.yaml).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kbqa.config import load_settings  # noqa: E402
from kbqa.eval import _norm, evaluate_retrieval, is_hit, load_questions  # noqa: E402
from kbqa.kb import KnowledgeBase  # noqa: E402

SETS = {"en": ("en-manuals", ROOT / "eval/dev_en.jsonl"), "zh": ("zh-docs", ROOT / "eval/dev_zh.jsonl")}
RESULTS = ROOT / "benchmarks/results"
DOCS = ROOT / "docs"
KBS = RESULTS / "kbs"


# -- shared ---------------------------------------------------------------------------------
@contextmanager
def open_kbs(model: str, tag: str = "default", langs: tuple[str, ...] = ("en", "zh"),
             splitter: dict[str, int] | None = None) -> Iterator[dict[str, tuple[KnowledgeBase, list[Any]]]]:
    """The dev-set KBs of one model (created and synced if needed), with their questions.

    A tag `c<size>o<overlap>` implies those splitter settings: opening a KB with other
    ones would re-split (and re-embed) it."""
    m = re.fullmatch(r"c(\d+)o(\d+)", tag)
    if m and splitter is None:
        splitter = {"chunk_size": int(m[1]), "chunk_overlap": int(m[2])}
    settings = load_settings(home=KBS / f"{model.replace('/', '_')}-{tag}", embedding={"model": model},
                             splitter=splitter or {})
    out: dict[str, tuple[KnowledgeBase, list[Any]]] = {}
    emb = None
    try:
        for lang in langs:
            corpus, qfile = SETS[lang]
            folder = ROOT / "benchmarks/data" / corpus
            if not folder.is_dir():
                raise SystemExit(f"{folder}: missing; run: python benchmarks/fetch_corpus.py {corpus}")
            kb = KnowledgeBase.create(corpus, settings.model_copy(deep=True), exist_ok=True, embeddings=emb)
            emb = kb.embeddings
            report = kb.add(folder)
            if report.chunks_embedded:
                print(f"  built {kb.settings.home.name}/{corpus}: {kb.store.count()} chunks "
                      f"({report.chunks_embedded} embedded, {report.seconds:.0f} s)", flush=True)
            out[lang] = (kb, load_questions(qfile))
        yield out
    finally:
        for kb, _ in out.values():
            kb.close()


def evaluate(kbs: dict[str, tuple[KnowledgeBase, list[Any]]], **retrieval: Any) -> dict[str, Any]:
    """hit@k/MRR per language with `retrieval` settings applied (then restored)."""
    row: dict[str, Any] = {}
    for lang, (kb, qs) in kbs.items():
        r = kb.settings.retrieval
        saved = r.model_copy()
        for key, value in retrieval.items():
            setattr(r, key, value)
        rep = evaluate_retrieval(qs, kb.search).to_json()  # MRR over the top 10, as `kbqa eval`
        for key, value in saved.model_dump().items():
            setattr(r, key, value)
        for key in ("hit@1", "hit@3", "hit@5", "hit@10", "mrr"):
            row[f"{lang}_{key}"] = rep[key]
        row[f"{lang}_p50_ms"] = rep["search_p50_ms"]
        row[f"{lang}_misses"] = rep["misses"]  # ids not in the top 5
    langs = list(kbs)
    for key in ("hit@5", "mrr"):
        row[f"mean_{key}"] = round(sum(row[f"{lang}_{key}"] for lang in langs) / len(langs), 4)
    return row


def save(name: str, data: Any) -> None:
    out = RESULTS / f"tuning-{name}.json"
    out.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"saved {out.relative_to(ROOT)}")


def table(rows: list[dict[str, Any]], cols: list[str], heads: list[str] | None = None) -> str:
    heads = heads or cols

    def fmt(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def figure(name: str, draw: Callable[[Any], None], title: str, size: tuple[float, float] = (7.0, 3.8)) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size, dpi=110)
    draw(ax)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    DOCS.mkdir(exist_ok=True)
    out = DOCS / f"tuning-{name}.png"
    fig.savefig(out)
    plt.close(fig)
    print(f"drew {out.relative_to(ROOT)}")


QUALITY = ["en_hit@5", "en_mrr", "zh_hit@5", "zh_mrr"]
STYLE = {"en_hit@5": ("#4C78A8", "-"), "en_mrr": ("#4C78A8", "--"), "zh_hit@5": ("#E45756", "-"),
         "zh_mrr": ("#E45756", "--")}


def lines(ax: Any, xs: list[Any], rows: list[dict[str, Any]], keys: list[str] = QUALITY) -> None:
    for key in keys:
        color, style = STYLE[key]
        ax.plot(xs, [r[key] for r in rows], style, marker="o", color=color, label=key.replace("_", " "))
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="lower right")


# -- sweeps ---------------------------------------------------------------------------------
def sweep_chunks(args: argparse.Namespace) -> None:
    rows = []
    for spec in args.sizes:
        size, overlap = (int(x) for x in spec.split(":"))
        print(f"chunk_size {size} overlap {overlap}", flush=True)
        shipped = load_settings().splitter
        tag = "default" if (size, overlap) == (shipped.chunk_size, shipped.chunk_overlap) else f"c{size}o{overlap}"
        with open_kbs(args.model, tag, splitter={"chunk_size": size, "chunk_overlap": overlap}) as kbs:
            row = {"chunk_size": size, "chunk_overlap": overlap,
                   "en_chunks": kbs["en"][0].store.count(), "zh_chunks": kbs["zh"][0].store.count(),
                   **evaluate(kbs)}
        rows.append(row)
        print(table([row], ["chunk_size", "chunk_overlap", *QUALITY]).splitlines()[-1], flush=True)
    save("chunks", {"model": args.model, "rows": rows})
    print(table(rows, ["chunk_size", "chunk_overlap", "en_chunks", "zh_chunks", *QUALITY]))
    labels = [f"{r['chunk_size']}/{r['chunk_overlap']}" for r in rows]
    figure("chunks", lambda ax: (lines(ax, labels, rows), ax.set_xlabel("chunk size / overlap (characters)")),
           f"Chunk size ({args.model}, hybrid, other settings default)")


def sweep_fusion(args: argparse.Namespace) -> None:
    # The linear score is (wd*dense + wk*keyword)/(wd + wk): only the ratio wd/wk changes the
    # order, so a sweep of the ratio (keyword_weight 1) covers the whole wd x wk grid.
    ratios = [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0]
    rows = []
    with open_kbs(args.model, args.tag) as kbs:
        for wd in ratios:
            rows.append({"fusion": "linear", "dense_weight": wd, "keyword_weight": 1.0,
                         **evaluate(kbs, fusion="linear", dense_weight=wd, keyword_weight=1.0)})
        rows.append({"fusion": "linear", "dense_weight": 1.0, "keyword_weight": 0.0,
                     **evaluate(kbs, fusion="linear", dense_weight=1.0, keyword_weight=0.0)})
        mapping = []
        for floor in (0.0, 0.1, 0.2, 0.3):
            for ceiling in (0.5, 0.6, 0.7, 0.8):
                mapping.append({"dense_floor": floor, "dense_ceiling": ceiling,
                                **evaluate(kbs, dense_floor=floor, dense_ceiling=ceiling)})
        rrf = []
        for wd in (0.25, 0.5, 1.0, 2.0):
            for rrf_k in (10, 30, 60):
                rrf.append({"fusion": "rrf", "dense_weight": wd, "keyword_weight": 1.0, "rrf_k": rrf_k,
                            **evaluate(kbs, fusion="rrf", dense_weight=wd, keyword_weight=1.0, rrf_k=rrf_k)})
    save("fusion", {"model": args.model, "linear": rows, "mapping": mapping, "rrf": rrf})
    print("linear, dense_weight : keyword_weight")
    print(table(rows, ["dense_weight", "keyword_weight", *QUALITY, "mean_mrr"]))
    print("cosine mapping (linear 1:1)")
    print(table(sorted(mapping, key=lambda r: -r["mean_mrr"]), ["dense_floor", "dense_ceiling", *QUALITY, "mean_mrr"]))
    print("rrf")
    print(table(rrf, ["dense_weight", "rrf_k", *QUALITY, "mean_mrr"]))

    def draw(ax: Any) -> None:
        ratio_rows = rows[:-1]
        lines(ax, [r["dense_weight"] for r in ratio_rows], ratio_rows)
        best_rrf = max(rrf, key=lambda r: r["mean_mrr"])
        for key in ("en_mrr", "zh_mrr"):
            ax.axhline(best_rrf[key], color=STYLE[key][0], ls=":", lw=1,
                       label=f"{key.replace('_', ' ')}, best RRF "
                             f"(wd {best_rrf['dense_weight']}, k {best_rrf['rrf_k']})")
        ax.legend(fontsize=7, loc="lower right")
        ax.set_xlabel("dense_weight (keyword_weight = 1); 0 = keyword order only")

    figure("fusion", draw, f"Linear fusion weight ({args.model}, hybrid)")


def sweep_depth(args: argparse.Namespace) -> None:
    with open_kbs(args.model, args.tag) as kbs:
        curve = []
        for lang, (kb, qs) in kbs.items():
            ranks = []
            for q in qs:
                if q.unanswerable:
                    continue
                sources = kb.search(q.question, 20)
                ranks.append(next((i for i, s in enumerate(sources, 1) if is_hit(q, s)), None))
            curve.append({"lang": lang, "n": len(ranks),
                          "hit@k": [round(sum(1 for r in ranks if r and r <= k) / len(ranks), 4)
                                    for k in range(1, 21)]})
        fetch = [{"fetch_k": n, **evaluate(kbs, fetch_k=n)} for n in (10, 20, 40, 80, 160)]
    save("depth", {"model": args.model, "hit_at_k": curve, "fetch_k": fetch})
    print(table([{"k": k, **{c["lang"]: c["hit@k"][k - 1] for c in curve}} for k in (1, 3, 5, 8, 10, 15, 20)],
                ["k", *[c["lang"] for c in curve]], ["k", *[f"{c['lang']} hit@k" for c in curve]]))
    print(table(fetch, ["fetch_k", *QUALITY, "en_p50_ms", "zh_p50_ms"]))

    def draw(ax: Any) -> None:
        for c in curve:
            ax.plot(range(1, 21), c["hit@k"], marker=".", color=STYLE[f"{c['lang']}_hit@5"][0],
                    label=f"{c['lang']} hit@k")
        ax.axvline(5, color="grey", ls=":", lw=1)
        ax.axhline(0.95, color="grey", ls="--", lw=1, label="goal hit@5 0.95")
        ax.set_ylim(0, 1.02)
        ax.set_xticks(range(1, 21))
        ax.set_xlabel("k (sources returned)")
        ax.legend(fontsize=8, loc="lower right")

    figure("depth", draw, f"hit@k by k ({args.model}, hybrid, fetch_k default)")


def sweep_model(args: argparse.Namespace) -> None:
    rows = []
    for model in args.models:
        with open_kbs(model, langs=("en",)) as kbs:
            emb_id = kbs["en"][0].embeddings.model_id
            for mode in ("dense", "keyword", "hybrid"):
                r = evaluate(kbs, mode=mode)
                rows.append({"model": emb_id, "mode": mode, **{k: r[k] for k in r if k.startswith("en_")}})
    save("model", {"rows": rows})
    print(table(rows, ["model", "mode", "en_hit@1", "en_hit@5", "en_hit@10", "en_mrr", "en_p50_ms"]))

    def draw(ax: Any) -> None:
        import numpy as np

        modes = ["dense", "keyword", "hybrid"]
        models = list(dict.fromkeys(r["model"] for r in rows))
        x = np.arange(len(modes))
        width = 0.8 / (2 * len(models))
        for i, m in enumerate(models):
            for j, key in enumerate(("en_hit@5", "en_mrr")):
                vals = [next(r[key] for r in rows if r["model"] == m and r["mode"] == mode) for mode in modes]
                bars = ax.bar(x + (2 * i + j - len(models) + 0.5) * width, vals, width,
                              label=f"{m} {key[3:]}", alpha=1.0 if j == 0 else 0.6,
                              color=["#4C78A8", "#F58518", "#54A24B", "#B279A2"][i % 4])
                ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.set_xticks(x, modes)
        ax.set_ylim(0, 1.08)
        ax.legend(fontsize=7, loc="upper left")

    figure("model", draw, "Embedding model, English dev set (hit@5 solid, MRR light)")


def sweep_threshold(args: argparse.Namespace) -> None:
    data = json.loads((RESULTS / f"refusal-{args.model}.json").read_text(encoding="utf-8"))
    sweep = data["sweep"]
    picked = [r for r in sweep if round(r["threshold"], 2) in (0.0, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45,
                                                              0.5, 0.6, 0.7)]
    if data["chosen"] not in picked:
        picked.append(data["chosen"])
        picked.sort(key=lambda r: r["threshold"])
    cols = ["threshold", "en_refusal_acc", "en_false_refusal", "zh_refusal_acc", "zh_false_refusal"]
    print(table(picked, cols))
    save("threshold", {"model": args.model, "chosen": data["chosen"], "tied_range": data["tied_range"],
                       "rows": picked})

    def draw(ax: Any) -> None:
        xs = [r["threshold"] for r in sweep]
        for lang, color in (("en", "#4C78A8"), ("zh", "#E45756")):
            ax.plot(xs, [r[f"{lang}_refusal_acc"] for r in sweep], "-", color=color,
                    label=f"{lang} refusal accuracy (unanswerable refused)")
            ax.plot(xs, [r[f"{lang}_false_refusal"] for r in sweep], "--", color=color,
                    label=f"{lang} false refusals (answerable refused)")
        ax.axvline(data["chosen"]["threshold"], color="grey", ls=":", lw=1,
                   label=f"answer.min_score {data['chosen']['threshold']:.2f}")
        ax.axhline(0.9, color="#54A24B", ls="-.", lw=0.8, label="goal: refusal ≥ 0.9")
        ax.axhline(0.1, color="#F58518", ls="-.", lw=0.8, label="goal: false refusals ≤ 0.1")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("answer.min_score (best source below it → refuse)")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3)

    figure("threshold", draw, f"Refusal threshold ({args.model}; unknown-term check on)", size=(7.5, 4.8))


def sweep_misses(args: argparse.Namespace) -> None:
    """Classify each hit@5 miss: gold ranked 6-10, 11-50, not in the top 50; and whether a
    top-5 source holds the answer strings anyway (gold page ambiguity)."""
    rows = []
    with open_kbs(args.model, args.tag) as kbs:
        for _lang, (kb, qs) in kbs.items():
            for q in qs:
                if q.unanswerable:
                    continue
                sources = kb.search(q.question, 50)
                rank = next((i for i, s in enumerate(sources, 1) if is_hit(q, s)), None)
                if rank is not None and rank <= 5:
                    continue
                elsewhere = [f"{s.file}:{s.page}" for s in sources[:5]
                             if q.must_contain and all(_norm(m) in _norm(s.text) for m in q.must_contain)]
                kind = ("answer in a non-gold top-5 source" if elsewhere else
                        "gold ranked 6-10" if rank and rank <= 10 else
                        "gold ranked 11-50" if rank else "gold not in top 50")
                rows.append({"id": q.id, "rank": rank, "kind": kind, "gold": f"{q.file}:{q.pages}",
                             "top5": [f"{s.file}:{s.page}" for s in sources[:5]], "answer_in": elsewhere,
                             "question": q.question})
    save("misses", {"model": args.model, "rows": rows})
    kinds: dict[str, int] = {}
    for r in rows:
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
    print(table([{"kind": k, "misses": v} for k, v in sorted(kinds.items())], ["kind", "misses"]))
    print(table(rows, ["id", "rank", "kind", "gold", "top5"]))


def ranks_of(kb: KnowledgeBase, qs: list[Any]) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for q in qs:
        if not q.unanswerable:
            sources = kb.search(q.question, 10)
            out[q.id] = next((i for i, s in enumerate(sources, 1) if is_hit(q, s)), None)
    return out


def sweep_compare(args: argparse.Namespace) -> None:
    """Paired comparison of the shipped retrieval settings with `--set key=value ...`: per
    question reciprocal rank (top 10), wins/losses and a bootstrap 95 % interval of the MRR
    and hit@5 differences, so a tuning gain can be told from one or two lucky questions."""
    import random

    overrides = {k: json.loads(v) if v[:1].isdigit() or v in ("true", "false") else v
                 for k, v in (item.split("=", 1) for item in args.set)}
    rows = []
    with open_kbs(args.model, args.tag) as kbs:
        for lang, (kb, qs) in kbs.items():
            base = ranks_of(kb, qs)
            r = kb.settings.retrieval
            saved = r.model_copy()
            for key, value in overrides.items():
                setattr(r, key, value)
            new = ranks_of(kb, qs)
            for key, value in saved.model_dump().items():
                setattr(r, key, value)
            ids = list(base)
            rr_b = [1 / base[i] if base[i] else 0.0 for i in ids]
            rr_n = [1 / new[i] if new[i] else 0.0 for i in ids]
            h_b = [1.0 if base[i] and base[i] <= 5 else 0.0 for i in ids]
            h_n = [1.0 if new[i] and new[i] <= 5 else 0.0 for i in ids]
            rng = random.Random(0)
            d_mrr, d_hit = [], []
            for _ in range(2000):
                pick = [rng.randrange(len(ids)) for _ in ids]
                d_mrr.append(sum(rr_n[j] - rr_b[j] for j in pick) / len(ids))
                d_hit.append(sum(h_n[j] - h_b[j] for j in pick) / len(ids))
            d_mrr.sort()
            d_hit.sort()
            rows.append({
                "lang": lang, "n": len(ids), "mrr_base": round(sum(rr_b) / len(ids), 4),
                "mrr_new": round(sum(rr_n) / len(ids), 4), "hit5_base": round(sum(h_b) / len(ids), 4),
                "hit5_new": round(sum(h_n) / len(ids), 4),
                "better": sum(1 for a, b in zip(rr_n, rr_b, strict=True) if a > b),
                "worse": sum(1 for a, b in zip(rr_n, rr_b, strict=True) if a < b),
                "mrr_diff_ci95": [round(d_mrr[50], 4), round(d_mrr[1949], 4)],
                "hit5_diff_ci95": [round(d_hit[50], 4), round(d_hit[1949], 4)],
                "changed": {i: [base[i], new[i]] for i in ids if base[i] != new[i]},
            })
    name = "compare-" + "-".join(f"{k}{v}" for k, v in overrides.items()) + (
        "" if args.tag == "default" else f"-{args.tag}")
    save(name, {"model": args.model, "overrides": overrides, "rows": rows})
    print(f"shipped settings vs {overrides}")
    print(table(rows, ["lang", "n", "hit5_base", "hit5_new", "mrr_base", "mrr_new", "better", "worse",
                       "mrr_diff_ci95", "hit5_diff_ci95"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep", choices=["chunks", "fusion", "depth", "model", "threshold", "misses", "compare"])
    ap.add_argument("--model", default="use-multilingual")
    ap.add_argument("--models", nargs="+", default=["use-multilingual", "minilm"], help="for `model`")
    ap.add_argument("--sizes", nargs="+", default=["250:50", "400:60", "600:90", "800:120", "1000:150"],
                    help="for `chunks`: size:overlap pairs")
    ap.add_argument("--tag", default="default",
                    help="KB folder suffix for fusion/depth/misses/compare, e.g. c800o120 (built by `chunks`)")
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                    help="for `compare`: retrieval settings to compare with the shipped ones")
    args = ap.parse_args()
    {"chunks": sweep_chunks, "fusion": sweep_fusion, "depth": sweep_depth, "model": sweep_model,
     "threshold": sweep_threshold, "misses": sweep_misses, "compare": sweep_compare}[args.sweep](args)


if __name__ == "__main__":
    main()
