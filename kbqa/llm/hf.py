"""The `transformers` backend: a local model directory — ChatGLM-6B/2/3, GLM-4, or any HF chat model.

THUDM's ChatGLM-6B / ChatGLM2-6B / ChatGLM3-6B / GLM-4-9B-Chat folders (`model_type: chatglm`)
load natively by default (kbqa.llm.glm): weights renamed onto transformers' own `GlmForCausalLM`
(ChatGLM-6B v1: onto kbqa's own module), kbqa's own tokenizers and chat formats — no code from
the folder runs, so it keeps working as transformers changes. `llm.trust_remote_code: true` opts in to the folder's
own code instead (its `stream_chat`, its `quantize()`), for models kbqa has no port of.
Everything else (GLM-4 -hf, Qwen, Llama, …) goes through the tokenizer's chat template. All
generation is `generate` with a `TextIteratorStreamer` on a worker thread. Nothing is ever
downloaded: the directory must exist and every load passes `local_files_only=True`.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

from kbqa.config import LLMSettings
from kbqa.embeddings.base import resolve_device as _resolve_device
from kbqa.embeddings.st_config import read_json_object
from kbqa.errors import LLMError
from kbqa.llm.base import Message, StopFilter
from kbqa.llm.glm import native as glm_native
from kbqa.llm.glm.chat import chat_ids as glm_chat_ids
from kbqa.llm.glm.chat import qa_pairs as glm_qa_pairs
from kbqa.llm.glm.chat import stop_ids as glm_stop_ids
from kbqa.llm.glm.family import Detected, is_chatglm_config

log = logging.getLogger(__name__)

MAX_CONTEXT = 32768
"""Cap on a window read from the model's config (GLM-4 says 128k; prompts that long are too slow here)."""
DEFAULT_CONTEXT = 2048
_WINDOW_KEYS = ("max_position_embeddings", "seq_length", "max_sequence_length", "n_positions", "max_seq_len")


def read_model_config(model_dir: Path) -> dict[str, Any]:
    """The directory's config.json as a dict ({} if it has none)."""
    return read_json_object(model_dir / "config.json", LLMError)


def is_chatglm(config: dict[str, Any]) -> bool:
    """True for THUDM's remote-code ChatGLM builds (ChatGLM-6B/2/3, the first GLM-4 chat release)."""
    return is_chatglm_config(config)


def resolve_device(device: str) -> str:
    """'auto' → cuda → mps → cpu; an explicit device is checked to exist."""
    return _resolve_device(device, "llm.device", LLMError)


def resolve_dtype(dtype: str, device: str) -> Any:
    """'auto' → bfloat16 (or float16 where bf16 is unsupported) on a GPU, float32 on CPU."""
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float16 if device == "mps" else torch.float32


def chatglm_query(messages: Sequence[Message], *, dict_history: bool) -> tuple[str, list[Any]]:
    """The (query, history) pair ChatGLM's `stream_chat` takes.

    ChatGLM3 keeps history as role/content dicts (system included). ChatGLM-6B/2 keep
    (question, answer) pairs and know no system role, so its text goes before the first question.
    """
    if not dict_history:
        query, pairs = glm_qa_pairs(messages)
        return query, list(pairs)
    if not messages:
        raise LLMError("no messages to answer")
    *earlier, last = messages
    return last["content"], [{"role": m["role"], "content": m["content"]} for m in earlier]


def _dtype_kwarg() -> str:
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"  # renamed in transformers 4.56


class TransformersChatModel:
    """A local HF model directory as a `ChatBackend`; weights load on the first `stream`."""

    def __init__(self, settings: LLMSettings) -> None:
        if not settings.model:
            raise LLMError("llm.model must name a local model directory for the 'transformers' backend")
        self.settings = settings
        self.path = Path(settings.model).expanduser()
        self.name = f"transformers:{self.path.name or settings.model}"
        self.languages: frozenset[str] | None = frozenset(settings.languages) or None
        self._config: dict[str, Any] | None = None
        self._tokenizer: Any = None
        self._model: Any = None
        self._device = ""
        self._window: int | None = None
        self._stream_chat_error: str | None = None
        self._glm: Detected | None = None
        # An explicit opt-in (off by default): running a downloaded folder's Python code.
        self.trust_remote_code = bool(getattr(settings, "trust_remote_code", False))
        self._lock = threading.Lock()

    # --- what the model is, read cheaply from config.json ---

    @property
    def config(self) -> dict[str, Any]:
        if self._config is None:
            if not self.path.is_dir():
                hint = (" kbqa never downloads models: fetch it first, e.g. "
                        f"`huggingface-cli download {self.settings.model} --local-dir <dir>`"
                        if self.settings.model.count("/") == 1 and not self.settings.model.startswith((".", "/", "~"))
                        else "")
                raise LLMError(f"llm.model: the model directory {str(self.path)!r} does not exist.{hint}")
            self._config = read_model_config(self.path)
        return self._config

    @property
    def is_chatglm(self) -> bool:
        return is_chatglm(self.config)

    @property
    def native_glm(self) -> Detected | None:
        """The ChatGLM family this folder holds when kbqa runs it natively (None: remote code or not ChatGLM)."""
        if self._glm is None and self.is_chatglm and not self.trust_remote_code:
            self._glm = glm_native.detect(self.path, self.config)
        return self._glm

    @property
    def context_window(self) -> int:
        if self._window is None:
            self._window = self._read_window()
        return self._window

    def _read_window(self) -> int:
        if self.settings.context_window:
            return self.settings.context_window
        configs = [self.config, self.config.get("text_config") or {}]
        for key in _WINDOW_KEYS:
            for cfg in configs:
                value = cfg.get(key) if isinstance(cfg, dict) else None
                if isinstance(value, int) and value > 0:
                    return min(value, MAX_CONTEXT)
        limit = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(limit, int) and 0 < limit < 1_000_000:  # HF uses ~1e30 for "unknown"
            return min(limit, MAX_CONTEXT)
        return DEFAULT_CONTEXT

    # --- loading ---

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            with self._lock:
                if self._tokenizer is None:
                    self._tokenizer = self._load_tokenizer()
        return self._tokenizer

    def _load_tokenizer(self) -> Any:
        _ = self.config  # the directory must exist
        glm = self.native_glm
        if glm is not None:
            return glm_native.native_tokenizer(self.path, glm)
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(str(self.path), local_files_only=True,
                                                 trust_remote_code=self.trust_remote_code)
        except Exception as exc:  # anything a tokenizer (or its remote code) raises is a load failure
            raise LLMError(f"{self.name}: cannot load the tokenizer from {self.path}: {exc}") from exc

    def _loaded(self) -> tuple[Any, Any]:
        tokenizer = self.tokenizer
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load_model()
        return self._model, tokenizer

    def _load_model(self) -> Any:
        import torch
        from transformers import AutoModel, AutoModelForCausalLM

        device = resolve_device(self.settings.device)
        bits = self.settings.quantize
        glm = self.native_glm
        if glm is not None:
            dtype = resolve_dtype(self.settings.dtype, device)
            log.info("loading %s natively as %s on %s (%s)%s", self.path, glm.label, device, dtype,
                     f", int{bits}" if bits else "")
            native = glm_native.native_model(self.path, self.config, glm, dtype=dtype, device=device, bits=bits)
            self._device = device
            return native
        chatglm = self.is_chatglm and self.trust_remote_code
        if bits and not chatglm:
            raise LLMError(f"llm.quantize={bits} works only for ChatGLM2/3 and GLM-4 folders; {self.path} "
                           f"is a '{self.config.get('model_type', '?')}' model. Unset llm.quantize or use a "
                           "pre-quantized model (GPTQ/AWQ, or a GGUF behind llm.backend: openai).")
        if bits and not device.startswith("cuda"):
            raise LLMError(f"llm.quantize={bits} needs a CUDA GPU (ChatGLM's quantize() runs CUDA kernels) but the "
                           f"device is {device!r}. Unset llm.quantize, or run on a GPU.")
        dtype = resolve_dtype(self.settings.dtype, device)
        kwargs: dict[str, Any] = {"local_files_only": True, "trust_remote_code": self.trust_remote_code,
                                  _dtype_kwarg(): dtype}
        to_device_after = chatglm or device == "cpu"  # ChatGLM: load, quantize, then move (as its README does)
        if not to_device_after:
            kwargs["device_map"] = device  # straight onto the GPU, no full copy in host memory
        auto_map = self.config.get("auto_map") or {}
        loader = AutoModel if chatglm and "AutoModel" in auto_map else AutoModelForCausalLM
        log.info("loading %s on %s (%s)%s", self.path, device, dtype, f", int{bits}" if bits else "")
        try:
            model: Any = loader.from_pretrained(str(self.path), **kwargs)
            if bits:
                if not hasattr(model, "quantize"):
                    raise LLMError(f"{self.name}: this ChatGLM build has no quantize(); unset llm.quantize")
                model = model.quantize(bits) or model
            if to_device_after:
                model = model.to(device)
            model.eval()
        except LLMError:
            raise
        except torch.cuda.OutOfMemoryError as exc:
            raise LLMError(f"{self.name}: out of GPU memory loading {self.path} on {device} "
                           "(try llm.quantize: 4 or 8 for ChatGLM, a smaller model, or llm.device: cpu)") from exc
        except MemoryError as exc:
            raise LLMError(f"{self.name}: out of memory loading {self.path}") from exc
        except Exception as exc:  # from_pretrained and remote code raise anything; the reason goes to the user
            raise LLMError(f"{self.name}: cannot load the model from {self.path}: {type(exc).__name__}: {exc}") from exc
        self._device = device
        return model

    # --- the ChatBackend interface ---

    def count_tokens(self, text: str) -> int:
        tokenizer = self.tokenizer
        try:
            return len(tokenizer.encode(text, add_special_tokens=False))
        except Exception as exc:  # a remote-code tokenizer can raise anything; the caller handles LLMError
            raise LLMError(f"{self.name}: the tokenizer failed on the prompt: {type(exc).__name__}: {exc}") from exc

    def stream(self, messages: Sequence[Message], *, max_tokens: int, temperature: float,
               stop: Sequence[str] = ()) -> Iterator[str]:
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        model, _ = self._loaded()
        use_stream_chat = (self.native_glm is None and hasattr(model, "stream_chat")
                           and self._stream_chat_error is None)
        pieces = (self._stream_chatglm(messages, max_tokens, temperature) if use_stream_chat
                  else self._stream_generate(messages, max_tokens, temperature))
        try:
            yield from StopFilter(stop).apply(pieces)
        finally:
            pieces.close()  # stops generation when the caller or a stop string ends the stream early

    def _stream_chatglm(self, messages: Sequence[Message], max_tokens: int,
                        temperature: float) -> Generator[str, None, None]:
        """ChatGLM's own `stream_chat`: it yields the whole reply so far; we yield what is new."""
        model, tokenizer = self._loaded()
        params = inspect.signature(model.stream_chat).parameters
        dict_history = "role" in params  # ChatGLM3: history of role/content dicts; 6B/2: (q, a) pairs
        query, history = chatglm_query(messages, dict_history=dict_history)
        kwargs: dict[str, Any] = {"max_new_tokens": max_tokens, **_sampling(temperature, chatglm=True)}
        sent = ""
        replies = model.stream_chat(tokenizer, query, history=history, **kwargs)
        try:
            while True:
                try:
                    item = next(replies)
                except StopIteration:
                    return
                except (AttributeError, TypeError) as exc:
                    if sent:
                        raise self._error(exc, "generation failed") from exc
                    # Old remote code calls transformers internals that newer releases removed.
                    self._stream_chat_error = f"{type(exc).__name__}: {exc}"
                    log.warning("%s: stream_chat() failed (%s); using generate() instead", self.name, exc)
                    yield from self._stream_generate(messages, max_tokens, temperature)
                    return
                except Exception as exc:  # the model's own code; turn any failure into LLMError
                    raise self._error(exc, "generation failed") from exc
                reply = item[0]
                if isinstance(reply, dict):  # ChatGLM3 answers tool calls as dicts
                    reply = str(reply.get("content", reply))
                if reply.startswith(sent) and len(reply) > len(sent):
                    piece, sent = reply[len(sent):], reply
                    yield piece
        finally:
            replies.close()

    def _stream_generate(self, messages: Sequence[Message], max_tokens: int,
                         temperature: float) -> Generator[str, None, None]:
        """Any causal LM: `generate` on a worker thread, text pieces from a `TextIteratorStreamer`."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        model, tokenizer = self._loaded()
        inputs = self._encode(messages)
        n_in = int(inputs["input_ids"].shape[-1])
        window = self.context_window
        if n_in >= window:
            raise LLMError(f"{self.name}: the prompt takes {n_in} tokens but the model's window is {window}")
        cancel = threading.Event()

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs: dict[str, Any] = {**inputs, "streamer": streamer, "max_new_tokens": min(max_tokens, window - n_in),
                                  "stopping_criteria": StoppingCriteriaList([_Cancelled()]),
                                  **_sampling(temperature)}
        eos = self._eos_ids()
        if eos:
            kwargs["eos_token_id"] = eos
        if tokenizer.pad_token_id is None and eos:
            kwargs["pad_token_id"] = eos[0]
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    model.generate(**kwargs)
            except BaseException as exc:  # handed to the reading thread below
                errors.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, name="kbqa-generate", daemon=True)
        worker.start()
        try:
            for text in streamer:
                if text:
                    yield text
        finally:
            cancel.set()
            worker.join()
        if errors:
            raise self._error(errors[0], "generation failed")

    def _encode(self, messages: Sequence[Message]) -> dict[str, Any]:
        """Prompt token ids by the tokenizer's chat template (ChatGLM3: build_chat_input; else plain text)."""
        from jinja2.exceptions import TemplateError

        tokenizer = self.tokenizer
        glm = self.native_glm
        if glm is not None:
            import torch

            ids = torch.tensor([glm_chat_ids(glm.family, tokenizer, messages)], device=self._device or "cpu")
            return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        chat = [{"role": m["role"], "content": m["content"]} for m in messages]
        try:
            if getattr(tokenizer, "chat_template", None):
                try:
                    enc = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt",
                                                        return_dict=True)
                except TemplateError:  # e.g. "system role not supported": fold it into the first user turn
                    enc = tokenizer.apply_chat_template(_fold_system(chat), add_generation_prompt=True,
                                                        return_tensors="pt", return_dict=True)
            elif hasattr(tokenizer, "build_chat_input"):  # ChatGLM3's tokenizer without a template
                query, history = chatglm_query(messages, dict_history=True)
                enc = tokenizer.build_chat_input(query, history=history, role="user")
            else:
                text = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in chat) + "Assistant:"
                enc = tokenizer(text, return_tensors="pt")
        except LLMError:
            raise
        except Exception as exc:  # template or tokenizer failure
            raise LLMError(f"{self.name}: cannot build the prompt: {type(exc).__name__}: {exc}") from exc
        return {k: v.to(self._device or "cpu") for k, v in dict(enc).items()}

    def _eos_ids(self) -> list[int]:
        model, tokenizer = self._loaded()
        glm = self.native_glm
        if glm is not None:
            return glm_stop_ids(glm.family, tokenizer, self.config)
        ids: list[int] = []
        configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        for value in (configured if isinstance(configured, list) else [configured], [tokenizer.eos_token_id]):
            ids.extend(v for v in value if isinstance(v, int) and v not in ids)
        if hasattr(tokenizer, "get_command"):  # ChatGLM3 ends a turn at <|user|> / <|observation|>
            for token in ("<|user|>", "<|observation|>"):
                # ChatGLM2's code asserts the token exists (it has no role tokens)
                with contextlib.suppress(KeyError, ValueError, TypeError, AssertionError):
                    ids.append(int(tokenizer.get_command(token)))
        return ids

    def _error(self, exc: BaseException, what: str) -> LLMError:
        if isinstance(exc, LLMError):
            return exc
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return LLMError(f"{self.name}: {what}: out of GPU memory (shorten the prompt or llm.max_new_tokens, "
                            "or use llm.quantize for ChatGLM)")
        reason = f"{type(exc).__name__}: {exc}"
        if self._stream_chat_error:
            reason += f" (and the model's own stream_chat() failed: {self._stream_chat_error}; its remote code may "
            reason += "not support this transformers version — consider serving it via llm.backend: openai)"
        return LLMError(f"{self.name}: {what}: {reason}")


def _sampling(temperature: float, *, chatglm: bool = False) -> dict[str, Any]:
    """Greedy at temperature 0, sampling above it."""
    if temperature > 0:
        return {"do_sample": True, "temperature": temperature}
    # ChatGLM's own loop still applies a temperature warper, which rejects 0.
    return {"do_sample": False, "temperature": 1.0} if chatglm else {"do_sample": False}


def _fold_system(chat: list[dict[str, str]]) -> list[dict[str, str]]:
    system = "\n".join(m["content"] for m in chat if m["role"] == "system")
    rest = [dict(m) for m in chat if m["role"] != "system"]
    if system:
        if rest and rest[0]["role"] == "user":
            rest[0]["content"] = f"{system}\n\n{rest[0]['content']}"
        else:
            rest.insert(0, {"role": "user", "content": system})
    return rest
