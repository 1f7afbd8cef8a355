"""How long `kbqa search … --json` takes to its first result: cold (a fresh process) and warm.

Cases, each timed `--runs` times (p50/p95; wall time from spawning the process to its exit):

* ``cold``: a fresh `kbqa search QUERY --json --local` process — interpreter, imports, settings,
  opening the index, the query encoder and (for Latin-script queries) the reranker, the search;
  once with the settings' reranker and once with ``KBQA_RETRIEVAL__RERANKER=none``.
* ``served``: the same command while `kbqa serve` runs with the same settings: the process sends
  the query to it (kbqa/warm.py) and prints its answer (checked equal to the cold output).
* ``in-process``: `KnowledgeBase.search` called again in one warmed-up process (no process start).
* ``baseline`` (``--baseline REF``): a fresh process of the code at git commit REF (extracted
  with `git archive` into a temp folder, its own default settings) — the "before" figure.

Plus ``phases``: one cold process split into import, index open, query encoding and search.

The knowledge base is the repository's sample one (`kbqa index knowledge/samples --kb samples`
first). Timings on shared CPUs are noisy: the load average before and after is saved with them.

    python benchmarks/bench_cold.py                       # 7 runs per case, saves results/cold.json
    python benchmarks/bench_cold.py --runs 9 --baseline 24c0ff7
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
QUERIES = {"en": "How long does descaling take?", "zh": "除垢需要多长时间？"}
RERANK_OFF = {"KBQA_RETRIEVAL__RERANKER": "none"}
PHASES = r"""
import json, sys, time
t0 = time.perf_counter(); marks = {}
def mark(name):
    global t0
    t = time.perf_counter(); marks[name] = round(1000 * (t - t0), 1); t0 = t
import kbqa.cli; mark("import kbqa.cli (typer, settings model)")
from kbqa.cli_common import cli_settings
from kbqa.kb import KnowledgeBase
settings = cli_settings(None, None); kb = KnowledgeBase.open(sys.argv[2], settings); mark("settings + open")
_ = kb.store; mark("index open (FAISS + SQLite)")
retriever = kb.retriever(); mark("retriever import")
kb.embeddings.encode_queries([sys.argv[1]]); mark("query encoder open + encode")
kb._tokenizer.query_terms(sys.argv[1]); mark("keyword terms (jieba)")
kb.search(sys.argv[1]); mark("search (incl. reranker load)")
kb.search(sys.argv[1]); mark("search again")
print(json.dumps(marks))
"""


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _summary(seconds: list[float]) -> dict[str, Any]:
    ms = [1000 * s for s in seconds]
    return {"runs": len(ms), "p50_ms": round(statistics.median(ms), 1), "p95_ms": round(_pct(ms, 0.95), 1),
            "min_ms": round(min(ms), 1), "samples_ms": [round(x, 1) for x in ms]}


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KBQA_CONFIG"}
    env.update(extra or {})
    return env


def _timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    t = time.perf_counter()
    run = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    elapsed = time.perf_counter() - t
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} … failed:\n{run.stderr[-2000:]}")
    return elapsed, run.stdout


def _kbqa(*args: str) -> list[str]:
    return [sys.executable, "-m", "kbqa.cli", *args]


def _cases(runs: int, kb: str, label: str, cmd_extra: list[str], env: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for lang, query in QUERIES.items():
        cmd = _kbqa("search", query, "--kb", kb, "--json", *cmd_extra)
        _timed(cmd, env, ROOT)  # first run: page cache, model cache folders
        times, outputs = [], set()
        for _ in range(runs):
            elapsed, stdout = _timed(cmd, env, ROOT)
            times.append(elapsed)
            outputs.add(stdout)
        out[lang] = {**_summary(times), "outputs_identical": len(outputs) == 1, "output": json.loads(outputs.pop())}
        print(f"{label:28s} {lang}: p50 {out[lang]['p50_ms']:7.1f} ms  p95 {out[lang]['p95_ms']:7.1f} ms", flush=True)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _served(runs: int, kb: str, env: dict[str, str], cold: dict[str, Any]) -> dict[str, Any]:
    from kbqa.cli_common import cli_settings
    from kbqa.warm import WarmServer, record_path

    record = record_path(cli_settings(None, None))
    if record.exists():
        raise SystemExit(f"{record} exists: stop the running `kbqa serve` first (this benchmark starts its own)")
    proc = subprocess.Popen(_kbqa("serve", "--port", str(_free_port())), env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while WarmServer.find(cli_settings(None, None)) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("kbqa serve did not start")
            time.sleep(0.2)
        time.sleep(5)  # its warm-up thread loads the embedding model and jieba
        out = _cases(runs, kb, "served (kbqa serve running)", [], env)
        for lang in QUERIES:
            out[lang]["same_output_as_cold"] = out[lang]["output"] == cold[lang]["output"]
        return out
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _in_process(runs: int, kb_name: str) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from kbqa.cli_common import cli_settings
    from kbqa.kb import KnowledgeBase

    out: dict[str, Any] = {}
    with KnowledgeBase.open(kb_name, cli_settings(None, None)) as kb:
        for lang, query in QUERIES.items():
            kb.search(query)
            times = []
            for _ in range(runs):
                t = time.perf_counter()
                kb.search(query)
                times.append(time.perf_counter() - t)
            out[lang] = _summary(times)
            print(f"{'in-process (warm)':28s} {lang}: p50 {out[lang]['p50_ms']:7.1f} ms", flush=True)
    return out


def _baseline(runs: int, kb: str, ref: str) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="kbqa-baseline-"))
    try:
        archive = subprocess.run(["git", "archive", ref, "kbqa"], cwd=ROOT, capture_output=True, check=True).stdout
        tar = tmp / "src.tar"
        tar.write_bytes(archive)
        with tarfile.open(tar) as t:
            t.extractall(tmp, filter="data")
        # Run from the extracted folder (so `import kbqa` finds that code first), on this home's KB.
        env = _env({"PYTHONPATH": str(tmp), "KBQA_CONFIG": str(tmp / "kbqa" / "default.yaml"),
                    "KBQA_HOME": str(ROOT)})
        where = subprocess.run([sys.executable, "-c", "import kbqa; print(kbqa.__file__)"], env=env, cwd=tmp,
                               capture_output=True, text=True, check=True).stdout
        if not where.startswith(str(tmp)):
            raise SystemExit(f"the baseline imports {where.strip()}, not the extracted {ref}")
        out = {}
        for lang, query in QUERIES.items():
            cmd = [sys.executable, "-c", "from kbqa.cli import main; main()", "search", query, "--kb", kb, "--json"]
            _timed(cmd, env, tmp)
            times = [_timed(cmd, env, tmp)[0] for _ in range(runs)]
            out[lang] = _summary(times)
            print(f"{'baseline ' + ref:28s} {lang}: p50 {out[lang]['p50_ms']:7.1f} ms", flush=True)
        return {"ref": ref, **out}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _phases(kb: str, env: dict[str, str]) -> dict[str, Any]:
    out = {}
    for lang, query in QUERIES.items():
        run = subprocess.run([sys.executable, "-c", PHASES, query, kb], env=env, cwd=ROOT, capture_output=True,
                             text=True, timeout=300, check=True)
        out[lang] = json.loads(run.stdout.strip().splitlines()[-1])
    return out


def _setting_exists(name: str) -> bool:
    from kbqa.config import load_settings
    from kbqa.errors import ConfigError

    try:
        load_settings(environ={"KBQA_" + name.upper().replace(".", "__"): "none"})
    except ConfigError:
        return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7, help="timed runs per case (medians of >= 5 are meaningful)")
    ap.add_argument("--kb", default="samples")
    ap.add_argument("--baseline", default="", help="a git commit to time too (the code before a change)")
    ap.add_argument("--no-serve", action="store_true", help="skip the `kbqa serve` case")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cold.json")
    args = ap.parse_args()
    os.chdir(ROOT)  # the sample KB's home, and where `kbqa serve` and every child process run
    sys.path.insert(0, str(ROOT))
    load_before = os.getloadavg()
    results: dict[str, Any] = {}
    env = _env()
    results["cold"] = _cases(args.runs, args.kb, "cold (fresh process)", ["--local"], env)
    if _setting_exists("retrieval.reranker"):
        results["cold_no_rerank"] = _cases(args.runs, args.kb, "cold, reranker none", ["--local"],
                                           _env(RERANK_OFF))
    if not args.no_serve:
        results["served"] = _served(args.runs, args.kb, env, results["cold"])
    results["in_process"] = _in_process(args.runs, args.kb)
    if args.baseline:
        results["baseline"] = _baseline(args.runs, args.kb, args.baseline)
    results["phases_ms"] = _phases(args.kb, env)
    for case in results.values():
        for lang in QUERIES:
            if isinstance(case.get(lang), dict):
                case[lang].pop("output", None)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    data = {
        "environment": {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
                        "processor": _cpu_name(), "commit": commit.strip(), "date": time.strftime("%Y-%m-%d %H:%M"),
                        "loadavg_before": [round(x, 2) for x in load_before],
                        "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "queries": QUERIES, "knowledge_base": args.kb, **results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"saved {args.out}")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
