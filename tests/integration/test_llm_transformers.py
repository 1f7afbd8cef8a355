"""The `transformers` backend for real, on a tiny random GLM built here (no downloads, a few seconds).

The model is a 2-layer `GlmForCausalLM` (hidden 64) with a BPE tokenizer trained on a few lines;
its output is gibberish but deterministic under greedy decoding, which is all the plumbing needs.
The remote-code ChatGLM path (opt-in `trust_remote_code`, its own `stream_chat`) runs THUDM-style code
written into the model directory by the test, on the same tiny weights; the native ChatGLM path is
proven in test_llm_glm_equivalence.py.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Generator
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GlmConfig, GlmForCausalLM, PreTrainedTokenizerFast

from kbqa.config import LLMSettings
from kbqa.errors import LLMError
from kbqa.llm import ChatBackend, as_langchain, complete, make_chat_model
from kbqa.llm.base import Message, StopFilter
from kbqa.llm.hf import TransformersChatModel, chatglm_query, is_chatglm, read_model_config

pytestmark = pytest.mark.integration

CORPUS = [
    "Grease the main bearing every 200 operating hours and inspect the seals for wear.",
    "Invoices are payable within 30 days; late payments incur a 2% monthly fee.",
    "设备每运行两百小时，需要对主轴承加注一次润滑脂，并检查密封圈是否老化。",
    "员工每年享有十五天带薪年假，未休完的年假最多可结转五天到下一年。",
]
SPECIALS = ["<unk>", "<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
WINDOW = 512
MESSAGES: list[Message] = [
    {"role": "system", "content": "Answer from the sources."},
    {"role": "user", "content": "How often is the bearing greased? 轴承多久加一次润滑脂？"},
]


def _tokenizer() -> PreTrainedTokenizerFast:
    """A Metaspace BPE: every token decodes to readable text (no stray bytes), zh and en."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(CORPUS * 4, trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


@pytest.fixture(scope="module")
def tiny_glm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny-glm"
    tokenizer = _tokenizer()
    tokenizer.save_pretrained(path)
    torch.manual_seed(0)
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert isinstance(eos, int)
    config = GlmConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=WINDOW,
                       pad_token_id=eos, eos_token_id=eos, bos_token_id=None)
    GlmForCausalLM(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def glm(tiny_glm: Path) -> TransformersChatModel:
    backend = make_chat_model(LLMSettings(backend="transformers", model=str(tiny_glm)))
    assert isinstance(backend, TransformersChatModel)
    return backend


@pytest.fixture(scope="module")
def reference(glm: TransformersChatModel) -> str:
    """The greedy reply to MESSAGES: long enough to cut with a stop string."""
    text = complete(glm, MESSAGES, max_tokens=24, temperature=0)
    assert len(text.strip()) >= 8, f"the tiny model's reply is too short to test with: {text!r}"
    return text


# --- the generic HF path ---


def test_streams_text_pieces(glm: TransformersChatModel, reference: str) -> None:
    assert isinstance(glm, ChatBackend)
    assert glm.name == "transformers:tiny-glm" and glm.languages is None
    pieces = list(glm.stream(MESSAGES, max_tokens=24, temperature=0))
    assert len(pieces) >= 2 and all(isinstance(p, str) and p for p in pieces)
    assert "".join(pieces) == reference  # greedy is deterministic
    sampled = "".join(glm.stream(MESSAGES, max_tokens=8, temperature=0.8))
    assert isinstance(sampled, str)


def test_max_tokens_bounds_the_reply(glm: TransformersChatModel, reference: str) -> None:
    short = complete(glm, MESSAGES, max_tokens=3, temperature=0)
    assert short and reference.startswith(short.rstrip()) and len(short) < len(reference)


def test_stop_strings_cut_the_reply(glm: TransformersChatModel, reference: str) -> None:
    start = len(reference) // 2
    stop = reference[start:start + 3]
    cut = reference.index(stop)
    assert complete(glm, MESSAGES, max_tokens=24, temperature=0, stop=[stop]) == reference[:cut]
    assert complete(glm, MESSAGES, max_tokens=24, temperature=0, stop=["never in it ✗"]) == reference


def test_closing_the_stream_early_ends_generation(glm: TransformersChatModel) -> None:
    pieces = glm.stream(MESSAGES, max_tokens=200, temperature=0)
    assert isinstance(pieces, Generator)
    assert next(pieces)
    pieces.close()
    assert not [t for t in threading.enumerate() if t.name == "kbqa-generate" and t.is_alive()]


def test_count_tokens_uses_the_models_tokenizer(glm: TransformersChatModel) -> None:
    for text in ("Grease the main bearing", "设备每运行两百小时", "mixed 中文 and English"):
        n = glm.count_tokens(text)
        assert n == len(glm.tokenizer.encode(text, add_special_tokens=False)) and n > 0
    assert glm.count_tokens("") == 0


def test_context_window_from_config_or_settings(glm: TransformersChatModel, tiny_glm: Path) -> None:
    assert glm.context_window == WINDOW
    small = TransformersChatModel(LLMSettings(backend="transformers", model=str(tiny_glm), context_window=64))
    assert small.context_window == 64
    too_long: list[Message] = [{"role": "user", "content": " ".join(CORPUS * 3)}]
    with pytest.raises(LLMError, match="window is 64"):
        list(small.stream(too_long, max_tokens=4, temperature=0))


def test_languages_and_device_settings(tiny_glm: Path) -> None:
    backend = TransformersChatModel(LLMSettings(backend="transformers", model=str(tiny_glm), languages=["zh", "en"],
                                                device="cpu", dtype="float32"))
    assert backend.languages == frozenset({"zh", "en"})
    assert complete(backend, MESSAGES, max_tokens=2, temperature=0)
    if not torch.cuda.is_available():
        cuda = TransformersChatModel(LLMSettings(backend="transformers", model=str(tiny_glm), device="cuda"))
        with pytest.raises(LLMError, match="CUDA"):
            list(cuda.stream(MESSAGES, max_tokens=2, temperature=0))


def test_quantize_is_refused_for_non_chatglm_models(tiny_glm: Path) -> None:
    backend = TransformersChatModel(LLMSettings(backend="transformers", model=str(tiny_glm), quantize=4))
    with pytest.raises(LLMError, match="quantize=4 works only for ChatGLM"):
        list(backend.stream(MESSAGES, max_tokens=2, temperature=0))


def test_langchain_face(glm: TransformersChatModel, reference: str) -> None:
    reply = as_langchain(glm, max_tokens=24, temperature=0).invoke([("system", MESSAGES[0]["content"]),
                                                                    ("human", MESSAGES[1]["content"])])
    assert reply.content == reference


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    backend = make_chat_model(LLMSettings(backend="transformers", model=str(missing)))  # cheap: nothing loaded
    assert backend is not None
    for use in (lambda: list(backend.stream(MESSAGES, max_tokens=2, temperature=0)),
                lambda: backend.count_tokens("hi"), lambda: backend.context_window):
        with pytest.raises(LLMError, match="no-such-model"):
            use()
    hub_id = make_chat_model(LLMSettings(backend="transformers", model="THUDM/chatglm3-6b"))
    assert hub_id is not None
    with pytest.raises(LLMError, match="never downloads"):
        hub_id.count_tokens("hi")


def test_broken_weights_are_a_clear_error(tmp_path: Path, tiny_glm: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_glm, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    backend = TransformersChatModel(LLMSettings(backend="transformers", model=str(broken)))
    with pytest.raises(LLMError, match="cannot load the model"):
        list(backend.stream(MESSAGES, max_tokens=2, temperature=0))


# --- ChatGLM detection and its own stream_chat ---


def test_chatglm_is_detected_from_config() -> None:
    assert is_chatglm({"model_type": "chatglm"})
    assert is_chatglm({"auto_map": {"AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration"}})
    assert is_chatglm({"auto_map": {"AutoTokenizer": ["tokenization_chatglm.ChatGLMTokenizer", None]}})
    assert not is_chatglm({"model_type": "glm", "architectures": ["GlmForCausalLM"]})
    assert not is_chatglm({})


def test_chatglm_history_shapes() -> None:
    chat: list[Message] = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]
    query, history = chatglm_query(chat, dict_history=True)
    assert query == "q2" and history == [{"role": "system", "content": "S"}, {"role": "user", "content": "q1"},
                                         {"role": "assistant", "content": "a1"}]
    query, history = chatglm_query(chat, dict_history=False)
    assert query == "q2" and history == [("S\n\nq1", "a1")]
    query, history = chatglm_query(chat[:1] + chat[-1:], dict_history=False)
    assert query == "S\n\nq2" and history == []


CONFIGURATION = '''
from transformers import GlmConfig


class FakeChatGLMConfig(GlmConfig):
    model_type = "chatglm"
'''

MODELING = '''
from transformers import GlmForCausalLM

from .configuration_fakeglm import FakeChatGLMConfig

REPLY = "轴承每 200 小时加一次润滑脂。 Grease every 200 hours."


class _Base(GlmForCausalLM):
    config_class = FakeChatGLMConfig

    def __init__(self, config):
        super().__init__(config)
        self.calls = []

    def _replies(self, query, history, call):
        self.calls.append(call)
        for end in range(1, len(REPLY) + 1):  # like ChatGLM: the whole reply so far, each time
            yield REPLY[:end], history + [(query, REPLY[:end])]

    def quantize(self, bits, **kwargs):
        self.quantized = bits
        return self


class ChatGLM3Like(_Base):
    def stream_chat(self, tokenizer, query, history=None, role="user", past_key_values=None, max_length=8192,
                    do_sample=True, top_p=0.8, temperature=0.8, logits_processor=None,
                    return_past_key_values=False, **kwargs):
        call = dict(query=query, history=list(history or []), role=role, do_sample=do_sample,
                    temperature=temperature, **kwargs)
        yield from self._replies(query, history or [], call)


class ChatGLM2Like(_Base):
    def stream_chat(self, tokenizer, query, history=None, past_key_values=None, max_length=8192, do_sample=True,
                    top_p=0.8, temperature=0.8, logits_processor=None, return_past_key_values=False, **kwargs):
        call = dict(query=query, history=list(history or []), do_sample=do_sample, temperature=temperature, **kwargs)
        yield from self._replies(query, history or [], call)


class OldRemoteCode(_Base):
    """Remote code written for an older transformers: its stream_chat hits a removed internal."""

    def stream_chat(self, tokenizer, query, history=None, role="user", **kwargs):
        self.calls.append("stream_chat")
        raise AttributeError("'OldRemoteCode' object has no attribute '_get_logits_warper'")
        yield
'''


def _chatglm_dir(tmp_path: Path, tiny_glm: Path, cls: str) -> Path:
    """A model directory shaped like THUDM's: model_type 'chatglm', auto_map into its own .py files."""
    path = tmp_path / f"chatglm-{cls.lower()}-{tmp_path.name}"  # unique: remote modules are cached by dir name
    shutil.copytree(tiny_glm, path)
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    config.update(model_type="chatglm", architectures=[cls], seq_length=WINDOW,
                  auto_map={"AutoConfig": "configuration_fakeglm.FakeChatGLMConfig",
                            "AutoModel": f"modeling_fakeglm.{cls}"})
    (path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (path / "configuration_fakeglm.py").write_text(CONFIGURATION, encoding="utf-8")
    (path / "modeling_fakeglm.py").write_text(MODELING, encoding="utf-8")
    return path


def _remote(settings: LLMSettings) -> TransformersChatModel:
    """A backend that opts in to the folder's own code (llm.trust_remote_code: true)."""
    backend = TransformersChatModel(settings)
    backend.trust_remote_code = True
    return backend


def test_remote_code_is_not_run_without_the_opt_in(tmp_path: Path, tiny_glm: Path) -> None:
    """By default a ChatGLM folder goes kbqa's native path; this one has no ChatGLM tokenizer file."""
    path = _chatglm_dir(tmp_path, tiny_glm, "ChatGLM3Like")
    backend = TransformersChatModel(LLMSettings(backend="transformers", model=str(path)))
    assert not backend.trust_remote_code
    with pytest.raises(LLMError, match=r"detected ChatGLM3-6B .*no tokenizer.model .*copy it"):
        backend.count_tokens("hello")
    assert backend._model is None


def test_chatglm3_uses_its_own_stream_chat(tmp_path: Path, tiny_glm: Path) -> None:
    path = _chatglm_dir(tmp_path, tiny_glm, "ChatGLM3Like")
    assert is_chatglm(read_model_config(path))
    backend = _remote(LLMSettings(backend="transformers", model=str(path), languages=["zh", "en"]))
    assert backend.is_chatglm and backend.context_window == WINDOW
    chat: list[Message] = [*MESSAGES, {"role": "assistant", "content": "every 200 h"},
                           {"role": "user", "content": "然后呢？"}]
    pieces = list(backend.stream(chat, max_tokens=50, temperature=0))
    assert len(pieces) > 10 and "".join(pieces) == "轴承每 200 小时加一次润滑脂。 Grease every 200 hours."
    (call,) = backend._model.calls
    assert call["query"] == "然后呢？" and call["role"] == "user"
    assert call["history"] == [dict(m) for m in chat[:-1]]  # system turn included, as ChatGLM3 expects
    assert call["do_sample"] is False and call["max_new_tokens"] == 50
    assert complete(backend, MESSAGES, max_tokens=50, temperature=0.5, stop=["。"]) == "轴承每 200 小时加一次润滑脂"
    assert backend._model.calls[-1]["do_sample"] is True and backend._model.calls[-1]["temperature"] == 0.5


def test_chatglm2_gets_question_answer_pairs(tmp_path: Path, tiny_glm: Path) -> None:
    path = _chatglm_dir(tmp_path, tiny_glm, "ChatGLM2Like")
    backend = _remote(LLMSettings(backend="transformers", model=str(path)))
    chat: list[Message] = [*MESSAGES, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}]
    assert complete(backend, chat, max_tokens=50, temperature=0).startswith("轴承")
    (call,) = backend._model.calls
    assert call["query"] == "Q2"
    assert call["history"] == [(f"{MESSAGES[0]['content']}\n\n{MESSAGES[1]['content']}", "A1")]


def test_old_chatglm_remote_code_falls_back_to_generate(tmp_path: Path, tiny_glm: Path, reference: str) -> None:
    path = _chatglm_dir(tmp_path, tiny_glm, "OldRemoteCode")
    backend = _remote(LLMSettings(backend="transformers", model=str(path)))
    assert complete(backend, MESSAGES, max_tokens=24, temperature=0) == reference  # same weights, chat template
    assert complete(backend, MESSAGES, max_tokens=24, temperature=0) == reference
    assert backend._model.calls == ["stream_chat"]  # tried once, then remembered


def test_chatglm_quantize_needs_cuda(tmp_path: Path, tiny_glm: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the refusal is for CPU/MPS")
    path = _chatglm_dir(tmp_path, tiny_glm, "ChatGLM3Like")
    backend = _remote(LLMSettings(backend="transformers", model=str(path), quantize=8))
    with pytest.raises(LLMError, match="quantize=8 needs a CUDA GPU"):
        list(backend.stream(MESSAGES, max_tokens=2, temperature=0))


# --- the stop-string filter both remote backends share ---


@pytest.mark.parametrize(("pieces", "stops", "expected"), [
    (["Hello ", "wor", "ld"], [], "Hello world"),
    (["Hello ", "wor", "ld"], ["world"], "Hello "),
    (["answer [1]", "\n\nQuest", "ion: next"], ["\n\nQuestion:"], "answer [1]"),
    (["abc", "\n", "\nx"], ["\n\n", "zz"], "abc"),
    (["a\n", "b"], ["\n\n"], "a\nb"),  # a held-back prefix is released when it turns out not to be a stop
    (["不知道。", "###", "下一题"], ["###"], "不知道。"),
])
def test_stop_filter(pieces: list[str], stops: list[str], expected: str) -> None:
    f = StopFilter(stops)
    out = "".join(f.push(p) for p in pieces) + f.flush()
    assert out == expected
    assert f.stopped == (expected != "".join(pieces))
