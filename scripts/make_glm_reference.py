"""Make the ChatGLM/GLM-4 reference outputs in tests/data/glm_reference/ with the UPSTREAM code.

Run once, in a scratch environment pinned to a transformers the upstream code runs on (it is
never needed by the tests or CI):

    python -m venv --system-site-packages /tmp/glmref
    /tmp/glmref/bin/pip install "transformers==4.40.2" sentencepiece tiktoken
    /tmp/glmref/bin/python scripts/make_glm_reference.py /path/to/shared/fixtures/chatglm
    /tmp/glmref/bin/python scripts/make_glm_reference.py /path/to/shared/fixtures/chatglm --check-variants

Per family it copies the fixture folder (upstream code + real tokenizer + tiny config.json),
builds the family's own `ChatGLMForConditionalGeneration` in float32, fills it with the seeded
weights of `kbqa.llm.glm.tiny.random_weights` (upstream names and shapes), and writes:
  weights.json   parameter names -> shapes, and per-tensor sums (to check regeneration)
  reference.json token ids of a bilingual text with special tokens, the chat prompt ids,
                 20 greedy ids (full forward each step, argmax), their decoded text, versions
  logits.npy     float32 logits of the last prompt position (the whole vocabulary)
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kbqa.llm.glm.tiny import SEED, checksum, random_weights  # noqa: E402

OUT = ROOT / "tests" / "data" / "glm_reference"
TEXT = ("<|system|>\n你是一个助手。<|user|>\nHow often is the bearing greased? 轴承多久加一次润滑脂？\n"
        "\tTabs  and   spaces,  emoji 🙂 [gMASK]<sop> 2024年12月3日 <|assistant|>\n答：每200小时。</s>")
SYSTEM = "Answer from the sources. 请根据资料回答。"
Q1, A1 = "What does E07 mean?", "E07 表示过热 [1]。"
QUERY = "How often is the bearing greased? 轴承多久加一次润滑脂？"
STEPS = 20

# family -> (folder for the model code, folder for the tokenizer code)
FAMILIES = {
    "chatglm2": ("chatglm2-6b", "chatglm2-6b-latest"),
    "chatglm3": ("chatglm3-6b", "chatglm3-6b"),
    "glm4": ("glm-4-9b-chat", "glm-4-9b-chat"),
    # ChatGLM-6B's tokenizer code only runs on transformers <= 4.33: make it in a second scratch
    # venv with "transformers==4.33.3" (`... make_glm_reference.py FIXTURES chatglm-6b`).
    "chatglm-6b": ("chatglm-6b", "chatglm-6b"),
}

# Other upstream revisions of the same families: `--check-variants` runs them and compares
# with the committed references (all equal when last run: logits diff 0.0, same ids).
VARIANTS = {
    "chatglm2": ("chatglm2-6b-latest", "chatglm2-6b-latest"),
    "chatglm3": ("chatglm3-6b-2024", "chatglm3-6b-2024"),
    "glm4": ("glm-4-9b-chat-2024-06", "glm-4-9b-chat-2024-06"),
}


def _chat_ids(family: str, tok: Any) -> list[int]:
    if family == "chatglm-6b":  # its stream_chat: rounds from 0, single newlines, no system role
        history = [(f"{SYSTEM}\n\n{Q1}", A1)]
        prompt = "".join(f"[Round {i}]\n问：{q}\n答：{a}\n" for i, (q, a) in enumerate(history))
        prompt += f"[Round {len(history)}]\n问：{QUERY}\n答："
        return [int(i) for i in tok([prompt])["input_ids"][0]]
    if family == "chatglm2":  # ChatGLM2 has no system role: kbqa puts it before the first question
        prompt = tok.build_prompt(QUERY, history=[(f"{SYSTEM}\n\n{Q1}", A1)])
        return list(tok([prompt])["input_ids"][0])
    if family == "chatglm3":
        history = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": Q1},
                   {"role": "assistant", "content": A1}]
        return [int(i) for i in tok.build_chat_input(QUERY, history=history)["input_ids"][0]]
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": Q1},
                {"role": "assistant", "content": A1}, {"role": "user", "content": QUERY}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    if ids and isinstance(ids[0], list):  # the June-2024 GLM-4 tokenizer returns a batch
        ids = ids[0]
    return [int(i) for i in ids]


def make(family: str, fixtures: Path, out_root: Path = OUT, folders: tuple[str, str] | None = None) -> None:
    import transformers
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    model_dir, tok_dir = folders or FAMILIES[family]
    with tempfile.TemporaryDirectory() as tmp:
        mdir, tdir = Path(tmp) / "model", Path(tmp) / "tok"
        shutil.copytree(fixtures / model_dir, mdir)
        shutil.copytree(fixtures / tok_dir, tdir)
        tok = AutoTokenizer.from_pretrained(str(tdir), trust_remote_code=True)
        config = AutoConfig.from_pretrained(str(mdir), trust_remote_code=True)
        config.torch_dtype = torch.float32
        model = AutoModel.from_config(config, trust_remote_code=True).float().eval()
        shapes = {k: list(v.shape) for k, v in model.state_dict().items() if not k.endswith("inv_freq")}
        weights = random_weights(shapes, SEED)
        missing, unexpected = model.load_state_dict(weights, strict=False)
        assert not unexpected and all(k.endswith("inv_freq") for k in missing), (missing, unexpected)

        text_ids = [int(i) for i in tok.encode(TEXT, add_special_tokens=False)]
        chat_ids = _chat_ids(family, tok)
        ids = torch.tensor([chat_ids])
        greedy: list[int] = []
        gaps: list[float] = []
        with torch.no_grad():
            first = model(input_ids=ids, use_cache=False).logits[0, -1].float()
            logits = first
            for _ in range(STEPS):
                top = torch.topk(logits, 2)
                gaps.append(float(top.values[0] - top.values[1]))
                nxt = int(top.indices[0])
                greedy.append(nxt)
                ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
                logits = model(input_ids=ids, use_cache=False).logits[0, -1].float()
        out = out_root / family
        out.mkdir(parents=True, exist_ok=True)
        (out / "weights.json").write_text(json.dumps(
            {"seed": SEED, "shapes": shapes, "sums": checksum(weights)}, indent=1) + "\n")
        np.save(out / "logits.npy", first.numpy().astype(np.float32))
        ref = {
            "family": family, "model_code": model_dir, "tokenizer_code": tok_dir,
            "transformers": transformers.__version__, "torch": torch.__version__,
            "text": TEXT, "text_ids": text_ids, "text_decoded": tok.decode(text_ids),
            "system": SYSTEM, "history": [Q1, A1], "query": QUERY, "chat_ids": chat_ids,
            "greedy_ids": greedy, "greedy_text": tok.decode(greedy), "min_top2_gap": min(gaps),
        }
        (out / "reference.json").write_text(json.dumps(ref, ensure_ascii=False, indent=1) + "\n")
        print(family, "ok", len(chat_ids), "prompt ids; greedy", greedy[:8], "min gap", min(gaps))


def check_variants(fixtures: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for family, folders in VARIANTS.items():
            make(family, fixtures, Path(tmp), folders)
            got = json.loads((Path(tmp) / family / "reference.json").read_text())
            want = json.loads((OUT / family / "reference.json").read_text())
            logits = np.load(Path(tmp) / family / "logits.npy")
            diff = float(np.abs(logits - np.load(OUT / family / "logits.npy")).max())
            same = {k: got[k] == want[k] for k in ("text_ids", "chat_ids", "greedy_ids")}
            print(f"{family} {folders[0]}: logits diff {diff}, {same}")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--check-variants"]
    fixtures = Path(args[0] if args else "/work/shared/fixtures/chatglm")
    if "--check-variants" in sys.argv:
        check_variants(fixtures)
    else:
        for name in args[1:] or FAMILIES:
            make(name, fixtures)
