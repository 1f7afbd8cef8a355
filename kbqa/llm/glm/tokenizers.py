"""kbqa's own ChatGLM / GLM-4 tokenizers: the tokenizer files, without the folder's Python code.

Upstream's `tokenization_chatglm.py` subclasses transformers' `PreTrainedTokenizer` and breaks
with its internals every few releases; the actual tokenisation is tiny — a sentencepiece model
(ChatGLM2/3) or tiktoken ranks (GLM-4) plus special tokens numbered after the vocabulary — so
it is written here against sentencepiece/tiktoken directly. The ids equal upstream's (checked
by tests/integration/test_llm_glm_equivalence.py against ids made with the upstream code).

The small transformers-like surface (`encode(text, add_special_tokens=False)`, `decode(ids,
skip_special_tokens=...)`, `eos_token_id`, `pad_token_id`) is what kbqa's transformers backend
and `TextIteratorStreamer` call.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from kbqa.errors import LLMError

SP_SPECIALS = ["[MASK]", "[gMASK]", "[sMASK]", "sop", "eop"]
ROLE_SPECIALS = ["<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"]
GLM4_SPECIALS = ["<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>", "<|user|>",
                 "<|assistant|>", "<|observation|>", "<|begin_of_image|>", "<|end_of_image|>",
                 "<|begin_of_video|>", "<|end_of_video|>"]
# GLM-4's split pattern, exactly as its tokenization_chatglm.py gives it to tiktoken.
GLM4_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


class GlmTokenizerBase:
    """What both tokenizers share: special tokens by name and id, and a transformers-like surface."""

    specials: dict[str, int]
    eos_token_id: int
    pad_token_id: int
    model_max_length = 1 << 30

    def __init__(self) -> None:
        self._special_ids = {i: t for t, i in self.specials.items()}

    def special(self, token: str) -> int:
        try:
            return self.specials[token]
        except KeyError:
            raise LLMError(f"the tokenizer has no special token {token!r}") from None

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids = self.encode_text(text)
        return self.prefix() + ids if add_special_tokens else ids

    def encode_text(self, text: str) -> list[int]:
        raise NotImplementedError

    def prefix(self) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: Iterable[Any] | int, skip_special_tokens: bool = False, **_: Any) -> str:
        out: list[str] = []
        run: list[int] = []
        for raw in [ids] if isinstance(ids, int) else ids:  # TextStreamer passes a single id too
            i = int(raw)
            if i in self._special_ids:
                out.append(self._decode_run(run))
                run = []
                if not skip_special_tokens:
                    out.append(self._special_ids[i])
            else:
                run.append(i)
        out.append(self._decode_run(run))
        return "".join(out)

    def _decode_run(self, ids: Sequence[int]) -> str:
        raise NotImplementedError

    def __len__(self) -> int:
        return max(self._special_ids) + 1


class SentencePieceGlmTokenizer(GlmTokenizerBase):
    """ChatGLM2 / ChatGLM3: `tokenizer.model` (sentencepiece); special ids follow the pieces.

    As upstream: text is encoded by sentencepiece as it is — special-token strings inside text
    stay text (upstream only splits them out when `encode_special_tokens=True`, never by default).
    """

    def __init__(self, model_file: Path, *, roles: bool) -> None:
        import sentencepiece

        self.sp = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
        n = self.sp.vocab_size()
        names = SP_SPECIALS + (ROLE_SPECIALS if roles else [])
        self.specials = {t: n + k for k, t in enumerate(names)}
        self.eos_token_id = int(self.sp.eos_id())
        self.pad_token_id = int(self.sp.unk_id())  # upstream pads with the unk id
        super().__init__()

    def encode_text(self, text: str) -> list[int]:
        return [int(i) for i in self.sp.encode(text)]

    def prefix(self) -> list[int]:
        return [self.specials["[gMASK]"], self.specials["sop"]]

    def _decode_run(self, ids: Sequence[int]) -> str:
        return str(self.sp.decode(list(ids))) if ids else ""


class TiktokenGlmTokenizer(GlmTokenizerBase):
    """GLM-4: base64 BPE ranks in `tokenizer.model`, special ids from tokenizer_config.json.

    Upstream's transformers tokenizer splits text on its added special tokens before BPE, so
    `<|user|>` inside text becomes the special id; tiktoken's `allowed_special="all"` does the
    same split. Chat prompts (kbqa.llm.glm.chat) encode message content with
    `encode_plain`, so a document cannot inject role tokens.
    """

    def __init__(self, model_file: Path, tokenizer_config: dict[str, Any]) -> None:
        import tiktoken

        ranks: dict[bytes, int] = {}
        for line in model_file.read_text(encoding="utf-8").splitlines():
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
        self.specials = _glm4_specials(tokenizer_config, len(ranks))
        self.enc = tiktoken.Encoding(name="kbqa-glm4", pat_str=GLM4_PATTERN, mergeable_ranks=ranks,
                                     special_tokens=self.specials)
        self.eos_token_id = self.specials["<|endoftext|>"]
        self.pad_token_id = self.eos_token_id
        super().__init__()

    def encode_text(self, text: str) -> list[int]:
        return list(self.enc.encode(text, allowed_special="all"))

    def encode_plain(self, text: str) -> list[int]:
        return list(self.enc.encode(text, allowed_special=set(), disallowed_special=()))

    def prefix(self) -> list[int]:
        return [self.specials["[gMASK]"], self.specials["<sop>"]]

    def _decode_run(self, ids: Sequence[int]) -> str:
        return self.enc.decode(list(ids), errors="replace") if ids else ""


def _glm4_specials(tokenizer_config: dict[str, Any], n_words: int) -> dict[str, int]:
    decoder = tokenizer_config.get("added_tokens_decoder")
    if isinstance(decoder, dict) and decoder:
        found = {str(v.get("content")): int(k) for k, v in decoder.items() if isinstance(v, dict)}
        if "<|endoftext|>" in found:
            return found
    return {t: n_words + k for k, t in enumerate(GLM4_SPECIALS)}  # upstream's order after the ranks


def load_tokenizer(model_dir: Path, family: str) -> GlmTokenizerBase:
    """The family's tokenizer from its files; raises LLMError saying which file is missing or bad."""
    model_file = model_dir / ("ice_text.model" if family == "chatglm-6b" else "tokenizer.model")
    if not model_file.is_file():
        raise LLMError(f"{model_dir}: no {model_file.name} (the tokenizer file of this family); copy it from the "
                       "model's original download into the folder")
    try:
        if family == "glm4":
            cfg_path = model_dir / "tokenizer_config.json"
            cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
            return TiktokenGlmTokenizer(model_file, cfg if isinstance(cfg, dict) else {})
        return SentencePieceGlmTokenizer(model_file, roles=family == "chatglm3")
    except ImportError as exc:
        raise LLMError(f"{model_dir}: reading {model_file.name} needs {exc.name}: pip install {exc.name}") from exc
    except (OSError, ValueError, RuntimeError, json.JSONDecodeError) as exc:
        raise LLMError(f"{model_dir}: cannot read the tokenizer file {model_file.name}: {exc}") from exc
