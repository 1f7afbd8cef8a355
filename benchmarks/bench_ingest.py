"""Parallel ingestion benchmark: the parser pool vs one parser thread, and kill -9 at real scale.

    python benchmarks/fetch_corpus.py en-manuals zh-docs      # once: the real dev corpus
    python benchmarks/bench_ingest.py                          # ~20 min on 2 busy cores

1. Builds a 2,000-file folder from the dev corpus (benchmarks/data/en-manuals + zh-docs):
   every page of the 15 real PDFs as its own one-page PDF (split with pypdf, 728 files), and
   txt/md pieces (~1,500 characters, cut at line ends) of the real text: the zh txt man pages
   and FAQ, the text of the zh html pages, and then the text extracted from the PDFs (cut at
   other places than the pages, so few chunks repeat a page's chunks). Plus a small
   `scanned/` set: PDF pages rendered to images (no text layer), which the loader OCRs.
2. Parse stage alone (load + split + keyword terms, no embedding) of the PDF pages, the
   text pieces and the scanned pages with loaders.workers = 0 (one thread), 1 and 2
   (processes): files/s, pages/s, wall and CPU seconds.
3. Full builds of the whole folder with the real default model (use-multilingual) for
   workers 0/1/2 and "auto": total time, files/s, pages/s, chunks/s and the speed-up.
4. kill -9 at real scale: `kbqa index FOLDER` in a subprocess, killed at a random moment,
   the index opened (a copy) and searched, the command rerun; its chunk ids (catalog,
   manifest, FAISS count) must equal a clean run's: no duplicates, no missing files.

Saves benchmarks/results/ingest.json. Not a test: figures depend on the machine (and on
whatever else runs on it: the load average is recorded beside each figure).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kbqa.config import load_settings  # noqa: E402
from kbqa.embeddings import KbqaEmbeddings, make_embeddings  # noqa: E402
from kbqa.index import scan_folder  # noqa: E402
from kbqa.kb import KnowledgeBase  # noqa: E402
from kbqa.store import FileRecord  # noqa: E402
from kbqa.store.vectors import VectorIndex  # noqa: E402
from kbqa.testing import FakeEmbeddings  # noqa: E402

DATA = ROOT / "benchmarks" / "data"
PIECE_CHARS = 1300


# -- the folder ------------------------------------------------------------------------------------
def build_folder(folder: Path, n_files: int, n_scanned: int) -> dict[str, int]:
    """Deterministic: the same dev corpus gives the same files. Returns counts by kind."""
    import pypdf
    import pypdfium2 as pdfium
    from bs4 import BeautifulSoup

    stamp = folder.with_name(folder.name + ".json")
    if folder.exists() and stamp.exists():
        built = json.loads(stamp.read_text(encoding="utf-8"))
        if built.get("args") == [n_files, n_scanned, PIECE_CHARS]:
            return dict(built["counts"])
    if folder.exists():
        shutil.rmtree(folder)
    pdfs = sorted([*DATA.glob("en-manuals/*.pdf"), *DATA.glob("zh-docs/*.pdf")])
    if not pdfs:
        raise SystemExit("no dev corpus: run  python benchmarks/fetch_corpus.py en-manuals zh-docs  first")
    pages_dir, text_dir, scan_dir = folder / "files" / "pdf", folder / "files" / "text", folder / "scanned"
    for d in (pages_dir, text_dir, scan_dir):
        d.mkdir(parents=True)
    counts = {"pdf_pages": 0, "txt": 0, "md": 0, "scanned": 0}
    pdf_text: list[str] = []
    for pdf in pdfs:
        reader = pypdf.PdfReader(pdf)
        for i, page in enumerate(reader.pages):
            if counts["pdf_pages"] < n_files:
                writer = pypdf.PdfWriter()
                writer.add_page(page)
                with open(pages_dir / f"{pdf.stem}-p{i + 1:03d}.pdf", "wb") as fh:
                    writer.write(fh)
                counts["pdf_pages"] += 1
        doc = pdfium.PdfDocument(str(pdf))
        pdf_text.extend(doc[i].get_textpage().get_text_range() for i in range(len(doc)))
        doc.close()
    sources: list[tuple[str, str, str]] = []  # (stem, suffix, text)
    for txt in sorted(DATA.glob("zh-docs/*.txt")):
        sources.append((txt.stem, ".txt", txt.read_text(encoding="utf-8", errors="replace")))
    for html in sorted(DATA.glob("zh-docs/*.html")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # XHTML parsed as HTML: fine for taking its text
            soup = BeautifulSoup(html.read_bytes(), "lxml")
        sources.append((html.stem, ".md", soup.get_text("\n")))
    # PDF text, shifted by half a piece so its pieces do not line up with the pages.
    joined = "\n".join(pdf_text)
    sources.append(("pdftext", ".md", joined[PIECE_CHARS // 2 :]))
    left = n_files - counts["pdf_pages"]
    for stem, suffix, text in sources:
        for k, piece in enumerate(_pieces(text)):
            if left <= 0:
                break
            (text_dir / f"{stem}-{k:04d}{suffix}").write_text(piece, encoding="utf-8")
            counts[suffix[1:]] += 1
            left -= 1
    # Scanned pages: text-bearing pages rendered at 150 dpi into image-only PDFs.
    rng = random.Random(7)
    picked = rng.sample([(p, i) for p in pdfs for i in range(len(pypdf.PdfReader(p).pages))], n_scanned)
    for pdf, i in sorted(picked):
        doc = pdfium.PdfDocument(str(pdf))
        image = doc[i].render(scale=150 / 72).to_pil().convert("RGB")
        image.save(scan_dir / f"{pdf.stem}-p{i + 1:03d}.pdf", "PDF", resolution=150.0)
        doc.close()
        counts["scanned"] += 1
    stamp.write_text(json.dumps({"args": [n_files, n_scanned, PIECE_CHARS], "counts": counts}), encoding="utf-8")
    return counts


def _pieces(text: str) -> list[str]:
    out, buf = [], ""
    for line in text.splitlines(keepends=True):
        buf += line
        if len(buf) >= PIECE_CHARS:
            if buf.strip():
                out.append(buf)
            buf = ""
    if buf.strip():
        out.append(buf)
    return out


# -- measurements ------------------------------------------------------------------------------
def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def parse_only(root: Path, workers: int | str, scratch: Path) -> dict[str, Any]:
    """Load + split + terms of every file under root, as the indexer's parse stage does it."""
    shutil.rmtree(scratch, ignore_errors=True)
    settings = load_settings(home=scratch, loaders={"workers": workers})
    kb = KnowledgeBase.create("parse", settings, embeddings=FakeEmbeddings())
    indexer = kb._indexer()
    paths = list(scan_folder(root))
    todo = [(p.relative_to(root).as_posix(), p, FileRecord(p.relative_to(root).as_posix(), "", 0, 0.0))
            for p in paths]
    load = os.getloadavg()[0]
    cpu, t = _cpu(), time.perf_counter()
    chunks = pages = failed = 0
    for prep in indexer._prepare_all(todo, root, {}):
        chunks += len(prep.chunks)
        pages += len({c.page for c in prep.chunks}) or 0
        failed += prep.result.status == "failed"
    wall = time.perf_counter() - t
    cpu = _cpu() - cpu
    kb.close()
    return {"workers": workers, "used": indexer.workers_for(todo), "files": len(paths), "pages": pages,
            "chunks": chunks, "failed": failed, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "files_per_s": round(len(paths) / wall, 3), "pages_per_s": round(pages / wall, 3),
            "load_avg_1m": round(load, 2)}


def full_build(folder: Path, workers: int | str, scratch: Path, emb: KbqaEmbeddings) -> dict[str, Any]:
    shutil.rmtree(scratch, ignore_errors=True)
    settings = load_settings(home=scratch, loaders={"workers": workers})
    kb = KnowledgeBase.create("full", settings, embeddings=emb)
    shutil.copytree(folder, kb.knowledge_dir, dirs_exist_ok=True)
    load = os.getloadavg()[0]
    cpu, t = _cpu(), time.perf_counter()
    report = kb.sync()
    wall = time.perf_counter() - t
    cpu = _cpu() - cpu
    rows = kb.store.catalog._db.execute("SELECT file, page FROM chunks").fetchall()
    pages = len(set(rows))
    used = kb._indexer().workers_for([(f.file, kb.knowledge_dir / f.file, None) for f in report.files])
    kb.close()
    return {"workers": workers, "used": used, "files": len(report.files), "failed": len(report.failed),
            "pages": pages, "chunks": len(rows), "chunks_embedded": report.chunks_embedded,
            "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "files_per_s": round(len(report.files) / wall, 1),
            "pages_per_s": round(pages / wall, 1), "chunks_per_s": round(len(rows) / wall, 1),
            "load_avg_1m": round(load, 2)}


# -- kill -9 at real scale ---------------------------------------------------------------------------
def _cli(home: Path, folder: Path, model: str, workers: int | str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KBQA_")}
    env.update(KBQA_EMBEDDING__MODEL=model, KBQA_LOADERS__WORKERS=str(workers), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-c", "from kbqa.cli import main; main()", "index", str(folder), "--kb", "big",
           "--home", str(home), "--json"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            out.extend(int(c) for c in task.read_text().split())
    return out


def on_disk(home: Path) -> dict[str, Any]:
    """What a finished (or killed) index holds, read straight from its files."""
    index = home / "vector_store" / "big"
    db = sqlite3.connect(f"file:{index / 'catalog.sqlite'}?mode=ro", uri=True)
    try:
        by_file: dict[str, list[str]] = {}
        for file, cid in db.execute("SELECT file, id FROM chunks ORDER BY file, page, start"):
            by_file.setdefault(file, []).append(cid)
        files = dict(db.execute("SELECT file, status FROM files"))
        generation = int((db.execute("SELECT value FROM meta WHERE key='generation'").fetchone() or [0])[0])
        fingerprint = json.loads(db.execute("SELECT value FROM meta WHERE key='fingerprint'").fetchone()[0])
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()
    vec = VectorIndex.load(index / "vectors.faiss", int(fingerprint["embedding"]["dimension"]), "Flat")
    try:
        manifest = json.loads((index / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = None
    ids = [c for cs in by_file.values() for c in cs]
    return {
        "files": files, "by_file": by_file, "ids": ids, "integrity": integrity, "generation": generation,
        "faiss_count": None if vec is None else vec.size,
        "faiss_generation": None if vec is None else vec.generation,
        "manifest_by_file": None if manifest is None else {f: v["chunks"] for f, v in manifest["files"].items()},
        "manifest_generation": None if manifest is None else manifest.get("generation"),
    }


def opens_after_kill(home: Path, scratch: Path, emb: KbqaEmbeddings, query: str) -> dict[str, Any]:
    """Open a copy of the killed index as a user would, and search it."""
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(home / "vector_store", scratch / "vector_store")
    (scratch / "knowledge" / "big").mkdir(parents=True)
    try:
        kb = KnowledgeBase.open("big", load_settings(home=scratch), embeddings=emb)
        hits = kb.search(query)
        state = {"opened": True, "hits": len(hits), "faiss": kb.store.count(),
                 "catalog_chunks": sum(len(v) for v in kb.store.catalog.chunk_ids_by_file().values())}
        kb.close()
        return state
    except Exception as exc:  # what this experiment counts
        return {"opened": False, "error": f"{type(exc).__name__}: {exc}"}


def kill_experiment(folder: Path, work: Path, model: str, trials: list[int | str], seed: int,
                    emb: KbqaEmbeddings) -> dict[str, Any]:
    rng = random.Random(seed)
    clean_home = work / "kill-clean"
    shutil.rmtree(clean_home, ignore_errors=True)
    t = time.perf_counter()
    proc = _cli(clean_home, folder, model, trials[0])
    _out, err = proc.communicate()
    clean_s = time.perf_counter() - t
    if proc.returncode not in (0, 1):
        raise SystemExit(f"clean kbqa index failed: {err.decode()[-2000:]}")
    clean = on_disk(clean_home)
    results: list[dict[str, Any]] = []
    for n, workers in enumerate(trials):
        home = work / f"kill-{n}"
        shutil.rmtree(home, ignore_errors=True)
        at = rng.uniform(0.1, 0.9) * clean_s
        t = time.perf_counter()
        proc = _cli(home, folder, model, workers)
        time.sleep(at)
        children = _children(proc.pid)
        landed = proc.poll() is None
        if landed:
            os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        time.sleep(3.0)
        orphans = [p for p in children if Path(f"/proc/{p}").exists() and _not_zombie(p)]
        killed = on_disk(home)
        opened = opens_after_kill(home, work / "kill-open", emb, "how do I change the caption font")
        t = time.perf_counter()
        proc = _cli(home, folder, model, workers)
        proc.communicate()
        rerun_s = time.perf_counter() - t
        final = on_disk(home)
        clean_set, final_set = set(clean["ids"]), set(final["ids"])
        results.append({
            "workers": workers, "killed_after_s": round(at, 1), "landed_while_running": landed,
            "killed_state": {"files_committed": len(killed["files"]), "chunks_committed": len(killed["ids"]),
                             "integrity": killed["integrity"], "faiss_stale": killed["faiss_generation"]
                             != killed["generation"], "manifest_stale": killed["manifest_generation"]
                             != killed["generation"]},
            "previous_index_opened": opened, "orphaned_parser_processes": len(orphans),
            "rerun_s": round(rerun_s, 1),
            "equal_to_clean": final["by_file"] == clean["by_file"] and final["files"] == clean["files"],
            "duplicate_chunks": len(final["ids"]) - len(final_set) + len(final_set - clean_set),
            "lost_chunks": len(clean_set - final_set),
            "missing_files": len(set(clean["files"]) - set(final["files"])),
            "faiss_count": final["faiss_count"], "catalog_chunks": len(final["ids"]),
            "manifest_equal": final["manifest_by_file"] == final["by_file"],
        })
    return {"model": model, "clean_s": round(clean_s, 1), "clean_files": len(clean["files"]),
            "clean_chunks": len(clean["ids"]), "clean_faiss_count": clean["faiss_count"], "trials": results}


def _not_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# -- main --------------------------------------------------------------------------------------------
def _workers(value: str) -> int | str:
    return value if value == "auto" else int(value)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--scanned", type=int, default=4, help="image-only PDF pages for the OCR figure (>= 4: the "
                    "pool starts only for MIN_FILES_FOR_PROCESSES files)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/kbqa-bench-ingest"))
    ap.add_argument("--model", default="use-multilingual", help="embedding model of the full builds")
    ap.add_argument("--kill-model", default="use-multilingual", help="embedding model of the kill -9 runs")
    ap.add_argument("--repeats", type=int, default=2, help="parse-only runs per setting (median reported)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["parse", "full", "kill"])
    ap.add_argument("--parse-subsets", nargs="*", default=[], choices=["pdf_pages", "text_pieces", "scanned_ocr"],
                    help="parse-only figures for these subsets only (default: all)")
    ap.add_argument("--full-workers", nargs="*", type=_workers, default=[0, 1, 2, "auto"],
                    help="loaders.workers settings of the full builds")
    ap.add_argument("--kill-workers", nargs="*", type=_workers, default=[2, 0, "auto"],
                    help="loaders.workers of each kill -9 trial")
    ap.add_argument("--seed", type=int, default=6)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ingest.json")
    args = ap.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    folder = args.work / "folder"
    t = time.perf_counter()
    counts = build_folder(folder, args.files, args.scanned)
    print(f"folder: {counts} built in {time.perf_counter() - t:.0f} s")
    files_root = folder / "files"
    result: dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpu", "cpus_usable": len(os.sched_getaffinity(0)),
        "folder": {**counts, "how": "one-page PDFs split from the 15 dev-corpus PDFs + txt/md pieces of their "
                   f"real text (~{PIECE_CHARS} chars); scanned = pages rendered to image-only PDFs"},
    }
    if "parse" not in args.skip:
        subsets = {"pdf_pages": files_root / "pdf", "text_pieces": files_root / "text",
                   "scanned_ocr": folder / "scanned"}
        parse: dict[str, Any] = {}
        for name, root in subsets.items():
            if args.parse_subsets and name not in args.parse_subsets:
                continue
            runs: dict[str, list[dict[str, Any]]] = {}
            ocr = name == "scanned_ocr"  # minutes per run on a busy 2-core box: once, thread vs one process
            for _ in range(1 if ocr else args.repeats):
                for workers in (0, 1) if ocr else (0, 1, 2, "auto"):
                    r = parse_only(root, workers, args.work / "parse-home")
                    runs.setdefault(str(workers), []).append(r)
                    print(f"parse {name:12s} workers={workers!s:4s} (used {r['used']}): {r['wall_s']:6.1f} s "
                          f"{r['files_per_s']:7.1f} files/s {r['pages_per_s']:7.1f} pages/s cpu {r['cpu_s']} s "
                          f"load {r['load_avg_1m']}", flush=True)
            med = {w: max(0.01, statistics.median(x["wall_s"] for x in rs)) for w, rs in runs.items()}
            parse[name] = {"runs": runs, "median_wall_s": med,
                           "speedup_vs_thread": {w: round(med["0"] / s, 2) for w, s in med.items()}}
            print(f"parse {name}: median wall {med}, speed-up vs thread {parse[name]['speedup_vs_thread']}")
        result["parse_only"] = parse
        save(args.out, result)
    emb: KbqaEmbeddings | None = None
    if "full" not in args.skip:
        emb = make_embeddings(load_settings(embedding={"model": args.model}).embedding)
        t = time.perf_counter()
        emb.encode(["warm-up"])
        full: dict[str, Any] = {"model": args.model, "model_load_s": round(time.perf_counter() - t, 1)}
        for workers in args.full_workers:
            r = full_build(files_root, workers, args.work / "full-home", emb)
            full[str(workers)] = r
            save(args.out, {"full_build": dict(full)})
            print(f"full  workers={workers!s:4s} (used {r['used']}): {r['wall_s']:6.1f} s {r['files_per_s']:6.1f} "
                  f"files/s {r['pages_per_s']:6.1f} pages/s {r['chunks_per_s']:6.1f} chunks/s ({r['chunks']} chunks, "
                  f"{r['failed']} failed) cpu {r['cpu_s']} s load {r['load_avg_1m']}", flush=True)
        every = json.loads(args.out.read_text(encoding="utf-8"))["full_build"]
        full["speedup_vs_thread"] = {w: round(every["0"]["wall_s"] / every[w]["wall_s"], 2)
                                     for w in ("0", "1", "2", "auto") if w in every and "0" in every}
        print(f"full build speed-up vs thread: {full['speedup_vs_thread']}")
        result["full_build"] = full
    if "kill" not in args.skip:
        if emb is None or args.kill_model != args.model:
            emb = make_embeddings(load_settings(embedding={"model": args.kill_model}).embedding)
        kill = kill_experiment(files_root, args.work, args.kill_model, args.kill_workers, args.seed, emb)
        for trial in kill["trials"]:
            print(f"kill -9 workers={trial['workers']} after {trial['killed_after_s']} s "
                  f"(landed: {trial['landed_while_running']}): {json.dumps(trial['killed_state'])}; opened: "
                  f"{trial['previous_index_opened']}; rerun {trial['rerun_s']} s -> equal to clean: "
                  f"{trial['equal_to_clean']}, duplicates {trial['duplicate_chunks']}, lost {trial['lost_chunks']}, "
                  f"missing files {trial['missing_files']}, FAISS {trial['faiss_count']} / catalog "
                  f"{trial['catalog_chunks']}, manifest equal {trial['manifest_equal']}, orphaned parsers "
                  f"{trial['orphaned_parser_processes']}")
        result["kill9"] = kill
    save(args.out, result)
    print(f"saved {args.out}")


def save(out: Path, result: dict[str, Any]) -> None:
    """Merge into the results file (after every stage, so a long run interrupted keeps what it measured)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(out.read_text(encoding="utf-8")) if out.exists() else {}
    for key in ("parse_only", "full_build"):  # a run of some subsets/settings keeps the others' figures
        if key in result and key in old:
            result[key] = {**old[key], **result[key]}
    old.update(result)
    out.write_text(json.dumps(old, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
