"""Bundled-LLM speed on this machine: time to first token for a ~1,500-token prompt,
decode tokens/s, and the peak RSS of a full `kbqa ask` process.

    python benchmarks/bench_llm.py [--threads 0] [--runs 3]

Saves benchmarks/results/llm.json (`--threads N`: llm-threadsN.json). The ask RSS is measured on the sample
knowledge base
(`kbqa index knowledge/samples --kb samples` first if needed) in a child process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kbqa.config import LLMSettings  # noqa: E402
from kbqa.embeddings.base import physical_cores  # noqa: E402
from kbqa.llm.bundled import BundledLlamaCpp  # noqa: E402

FILLER = ("The booktabs package provides \\toprule, \\midrule and \\bottomrule for the horizontal rules of "
          "a table; vertical rules and double rules should never be used. ")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--prompt-tokens", type=int, default=1500)
    ap.add_argument("--transformers", action="store_true",
                    help="also time the same GGUF loaded by transformers (dequantised to fp32): why llama.cpp")
    args = ap.parse_args()
    llm = BundledLlamaCpp(LLMSettings(threads=args.threads))
    t = time.perf_counter()
    llm.context_window  # noqa: B018 - loads the model
    load_s = time.perf_counter() - t
    context = FILLER
    while llm.count_tokens(context) < args.prompt_tokens - 60:
        context += FILLER
    messages = [{"role": "system", "content": "Answer only from the sources. Cite [n]."},
                {"role": "user", "content": f"Sources:\n\n[1] booktabs.pdf p.3\n{context}\n\n"
                                            "Question: Which rule commands does booktabs provide?\nAnswer:"}]
    prompt_tokens = sum(llm.count_tokens(m["content"]) for m in messages)
    ttft, rates, lengths = [], [], []
    for i in range(args.runs):
        # A different first word each run, so llama.cpp cannot reuse the previous prompt's KV cache.
        messages[0]["content"] = f"Run {i}. " + messages[0]["content"]
        t = time.perf_counter()
        first = None
        n = 0
        for _ in llm.stream(messages, max_tokens=128, temperature=0.0):
            if first is None:
                first = time.perf_counter()
            n += 1
        end = time.perf_counter()
        assert first is not None
        ttft.append(first - t)
        rates.append((n - 1) / (end - first) if n > 1 else 0.0)
        lengths.append(n)
    rss_self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ask_rss_mb = None
    env = {**os.environ, "KBQA_HOME": str(ROOT)}
    if (ROOT / "vector_store/samples").exists():
        code = ("import resource, sys; from kbqa.cli import main; sys.argv=['kbqa','ask','What does error E07 mean?',"
                "'--kb','samples','--json']\ntry:\n main()\nexcept SystemExit: pass\n"
                "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
        ask_rss_mb = int(proc.stderr.strip().splitlines()[-1]) / 1024
    result = {
        "model": llm.name, "threads": args.threads or max(1, physical_cores() - 1), "cpu_count": os.cpu_count(),
        "load_s": round(load_s, 2), "prompt_tokens": prompt_tokens,
        "ttft_s_median": round(statistics.median(ttft), 2), "ttft_s": [round(x, 2) for x in ttft],
        "decode_tokens_per_s_median": round(statistics.median(rates), 1),
        "decode_tokens_per_s": [round(x, 1) for x in rates],
        "generated_tokens": lengths, "bench_rss_mb": round(rss_self_mb),
        "kbqa_ask_peak_rss_mb": ask_rss_mb and round(ask_rss_mb),
    }
    if args.transformers:
        result["transformers_fp32"] = _transformers_speed(messages, llm.path)
    print(json.dumps(result, indent=1))
    name = f"llm-threads{args.threads}.json" if args.threads else "llm.json"  # llm.json: the default threads
    out = ROOT / "benchmarks/results" / name
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"saved {out.relative_to(ROOT)}")


def _transformers_speed(messages: list[dict[str, str]], gguf: Path) -> dict[str, float]:
    """The alternative the issue names: transformers + gguf_file (weights dequantised to fp32)."""
    from threading import Thread

    from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer

    t = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    load_s = time.perf_counter() - t
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    streamer = TextIteratorStreamer(tok, skip_prompt=True)
    t = time.perf_counter()
    worker = Thread(target=model.generate, kwargs={**ids, "max_new_tokens": 64, "do_sample": False,
                                                   "streamer": streamer})
    worker.start()
    first, n = None, 0
    for piece in streamer:
        if piece and first is None:
            first = time.perf_counter()
        n += 1
    end = time.perf_counter()
    worker.join()
    assert first is not None
    return {"load_s": round(load_s, 2), "ttft_s": round(first - t, 2),
            "decode_pieces_per_s": round((n - 1) / (end - first), 1) if n > 1 else 0.0}


if __name__ == "__main__":
    main()
