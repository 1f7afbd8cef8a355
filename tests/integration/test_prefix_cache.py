"""The system prefix's KV state, saved by one model instance and loaded by the next, gives the same
greedy answer as reading the whole prompt (real llama.cpp, the bundled SmolLM2: small and fast)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbqa.config import LLMSettings
from kbqa.llm.base import Message
from kbqa.llm.bundled import BundledLlamaCpp

MESSAGES: list[Message] = [
    {"role": "system", "content": "You answer questions about the user's documents, briefly, citing [1]."},
    {"role": "user", "content": "Sources:\n\n[1] manual.pdf p.3\nDescale every 300 cups with 500 ml of water.\n\n"
                                "Question: How much water is used for descaling?"},
]


def _answer(model: BundledLlamaCpp) -> str:
    return "".join(model.stream(MESSAGES, max_tokens=24, temperature=0.0))


def test_prefix_state_from_disk_gives_the_same_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KBQA_MODELS_DIR", str(tmp_path / "models"))
    settings = LLMSettings(model="smollm2", threads=1)
    first = BundledLlamaCpp(settings)
    cold = _answer(first)
    states = list((tmp_path / "models" / "prefix-states").glob("*.npz"))
    assert len(states) == 1 and cold.strip()

    second = BundledLlamaCpp(settings)  # a new llama context, as a new `kbqa ask` process has
    llm = second._model()
    evaluated: list[int] = []
    original = llm.eval

    def counting_eval(tokens: list[int]) -> None:
        evaluated.append(len(tokens))
        original(tokens)

    monkeypatch.setattr(llm, "eval", counting_eval)
    assert _answer(second) == cold
    assert second._prefix is not None
    prefix = second._prefix._known[str(MESSAGES[0]["content"])]
    full = second._prefix._tokens([{"role": m["role"], "content": m["content"]} for m in MESSAGES])
    # the prefix came from disk: llama.cpp only read the rest of the prompt, then one token at a time
    assert len(prefix) > 8 and evaluated[0] == len(full) - len(prefix) and set(evaluated[1:]) <= {1}

    states[0].write_bytes(b"not a state")  # damaged: read the prefix again, same answer
    third = BundledLlamaCpp(settings)
    assert _answer(third) == cold
