"""ChatGLM-6B (v1) natively: a compact module of kbqa's, its tokenizer and its chat format.

v1 is not the ChatGLM2+ architecture transformers' GlmForCausalLM implements, so it is written
here, mirroring upstream's modeling_chatglm.py (checked against it on a tiny random checkpoint
by tests/integration/test_llm_glm_equivalence.py):
- prompt = text, then `[gMASK] <sop>`; tokens up to `<sop>` attend to each other both ways
  (a prefix LM), later ones causally;
- 2D rotary positions: the first half of each head's dims rotates with the position (tokens
  after `<sop>` all take the position of `[gMASK]`), the second half with the block position
  (0 in the prompt, 1, 2, … after it); GPT-NeoX-style halves; inverse frequencies rounded to
  float16 as upstream stores them;
- per-head interleaved [q | k | v] in `query_key_value`; LayerNorm with bias; DeepNorm-style
  residuals `x_normed * sqrt(2 * 28) + f(x_normed)`; tanh-approximated GeLU.
Generation keeps a key/value cache; `generate` takes the subset of transformers' arguments
kbqa's backend passes (streamer, stopping criteria, eos ids, greedy or temperature sampling).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kbqa.errors import LLMError
from kbqa.llm.base import Message

V1_SPECIALS = ["[MASK]", "[gMASK]", "[sMASK]", "<unused_0>", "<sop>", "<eop>", "<ENC>", "<dBLOCK>"]


class V1Tokenizer:
    """ice_text.model with v1's text preprocessing (<n>, <|tab|>, <|blank_N|>) and image-token offset."""

    model_max_length = 2048

    def __init__(self, model_file: Path, num_image_tokens: int = 20000, max_blank: int = 80) -> None:
        import sentencepiece

        self.sp = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
        self.offset = num_image_tokens
        self.max_blank = max_blank
        self.specials = {t: int(self.sp.piece_to_id(t)) + self.offset for t in V1_SPECIALS}
        self.eos_token_id = self.specials["<eop>"]
        self.pad_token_id = int(self.sp.piece_to_id("<pad>")) + self.offset

    def special(self, token: str) -> int:
        return self.specials[token]

    def _preprocess(self, text: str) -> str:
        text = text.replace("\n", "<n>").replace("\t", "<|tab|>")
        for n in range(self.max_blank, 1, -1):
            text = text.replace(" " * n, f"<|blank_{n}|>")
        return text

    def encode_text(self, text: str) -> list[int]:
        return [int(i) + self.offset for i in self.sp.encode(self._preprocess(text))]

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids = self.encode_text(text)
        return [*ids, self.specials["[gMASK]"], self.specials["<sop>"]] if add_special_tokens else ids

    def decode(self, ids: Iterable[Any] | int, skip_special_tokens: bool = False, **_: Any) -> str:
        raw = [ids] if isinstance(ids, int) else [int(i) for i in ids]
        special = set(self.specials.values())
        kept = [i - self.offset for i in raw if i >= self.offset and not (skip_special_tokens and i in special)]
        text = str(self.sp.decode(kept))
        text = text.replace("<n>", "\n").replace("<|tab|>", "\t")
        for n in range(2, self.max_blank + 1):
            text = text.replace(f"<|blank_{n}|>", " " * n)
        return text


def v1_chat_ids(tokenizer: V1Tokenizer, messages: Sequence[Message]) -> list[int]:
    """As v1's stream_chat: the bare query with no history, else "[Round i]\\n问：…\\n答：…\\n" from 0."""
    from kbqa.llm.glm.chat import qa_pairs

    query, history = qa_pairs(messages)
    if history:
        prompt = "".join(f"[Round {i}]\n问：{q}\n答：{a}\n" for i, (q, a) in enumerate(history))
        prompt += f"[Round {len(history)}]\n问：{query}\n答："
    else:
        prompt = query
    return tokenizer.encode(prompt, add_special_tokens=True)


class _Attention(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.query_key_value = nn.Linear(hidden, 3 * hidden)
        self.dense = nn.Linear(hidden, hidden)


class _MLP(nn.Module):
    def __init__(self, hidden: int, inner: int) -> None:
        super().__init__()
        self.dense_h_to_4h = nn.Linear(hidden, inner)
        self.dense_4h_to_h = nn.Linear(inner, hidden)


class _Block(nn.Module):
    def __init__(self, hidden: int, heads: int, inner: int, eps: float) -> None:
        super().__init__()
        self.input_layernorm = nn.LayerNorm(hidden, eps=eps)
        self.attention = _Attention(hidden, heads)
        self.post_attention_layernorm = nn.LayerNorm(hidden, eps=eps)
        self.mlp = _MLP(hidden, inner)


class _Transformer(nn.Module):
    def __init__(self, vocab: int, hidden: int, heads: int, inner: int, layers: int, eps: float) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.layers = nn.ModuleList(_Block(hidden, heads, inner, eps) for _ in range(layers))
        self.final_layernorm = nn.LayerNorm(hidden, eps=eps)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(0.7978845608028654 * x * (1.0 + 0.044715 * x * x)))


class ChatGLM6B(nn.Module):
    """ChatGLM-6B (v1) with upstream's parameter names (transformer.layers.N.…, lm_head)."""

    inv_freq: torch.Tensor

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        if not config.get("position_encoding_2d", True):
            raise LLMError("config.json has position_encoding_2d=false; kbqa's ChatGLM-6B port supports only 2D")
        hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
        self.layers_n = int(config["num_layers"])
        self.heads, self.head_dim = heads, hidden // heads
        self.bos_id, self.gmask_id = int(config["bos_token_id"]), int(config["gmask_token_id"])
        self.mask_id = int(config.get("mask_token_id", self.gmask_id))
        self.max_positions = int(config.get("max_sequence_length", 2048))
        self.transformer = _Transformer(int(config["vocab_size"]), hidden, heads,
                                        int(config.get("inner_hidden_size") or 4 * hidden), self.layers_n,
                                        float(config.get("layernorm_epsilon", 1e-5)))
        self.lm_head = nn.Linear(hidden, int(config["vocab_size"]), bias=False)
        rot = self.head_dim // 2
        # upstream keeps inv_freq in float16 (RotaryEmbedding's .half()); the rounding changes the angles
        inv_freq = (1.0 / (10000 ** (torch.arange(0, rot, 2).float() / rot))).half().float()
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    def _positions(self, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        if self.bos_id not in ids:
            raise LLMError("ChatGLM-6B prompts must contain <sop> (kbqa's chat format adds it)")
        context = ids.index(self.bos_id)
        mask_token = self.gmask_id if self.gmask_id in ids else self.mask_id
        mask_pos = ids.index(mask_token) if mask_token in ids else context
        n = len(ids)
        pos = torch.arange(n)
        pos[context:] = mask_pos
        block = torch.cat((torch.zeros(context, dtype=torch.long), torch.arange(1, n - context + 1)))
        return pos, block, context

    def _cos_sin(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = torch.outer(positions.to(self.inv_freq.device).float(), self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype)[:, None, :], emb.sin().to(dtype)[:, None, :]  # [s, 1, rot]

    def forward(self, input_ids: torch.Tensor, cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
                full_ids: list[int] | None = None) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """Logits [1, s, vocab] for `input_ids` [1, s] (batch 1), continuing `cache` if given."""
        ids = full_ids if full_ids is not None else [int(i) for i in input_ids[0]]
        s = input_ids.shape[1]
        pos, block, context = self._positions(ids)
        pos, block = pos[-s:], block[-s:]
        x = self.transformer.word_embeddings(input_ids)[0]  # [s, h]
        dtype = x.dtype
        cos1, sin1 = self._cos_sin(pos, dtype)
        cos2, sin2 = self._cos_sin(block, dtype)
        past = len(ids) - s
        mask = None
        if s > 1:  # prompt: bidirectional before <sop>, causal after (upstream get_masks)
            allowed = torch.ones(s, past + s, dtype=torch.bool, device=x.device).tril(diagonal=past)
            allowed[:, :context] = True
            mask = allowed
        # Upstream's GLMBlock never receives num_layers and keeps its default of 28 (the 6B model's
        # depth), so the DeepNorm factor is sqrt(56) whatever config.json says.
        alpha = (2 * 28) ** 0.5
        new_cache: list[tuple[torch.Tensor, torch.Tensor]] = []
        layer: Any
        for i, layer in enumerate(self.transformer.layers):
            h = layer.input_layernorm(x)
            qkv = layer.attention.query_key_value(h).view(s, self.heads, 3 * self.head_dim)
            q, k, v = qkv.split(self.head_dim, dim=-1)
            q1, q2 = q.chunk(2, dim=-1)
            k1, k2 = k.chunk(2, dim=-1)
            q = torch.cat((_rotate(q1, cos1, sin1), _rotate(q2, cos2, sin2)), dim=-1)
            k = torch.cat((_rotate(k1, cos1, sin1), _rotate(k2, cos2, sin2)), dim=-1)
            if cache is not None:
                k = torch.cat((cache[i][0], k), dim=0)
                v = torch.cat((cache[i][1], v), dim=0)
            new_cache.append((k, v))
            scores = torch.einsum("qhd,khd->hqk", q.float(), k.float()) / math.sqrt(self.head_dim)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            probs = torch.softmax(scores, dim=-1).to(v.dtype)
            ctx = torch.einsum("hqk,khd->qhd", probs, v).reshape(s, -1)
            x = h * alpha + layer.attention.dense(ctx)
            m = layer.post_attention_layernorm(x)
            x = m * alpha + layer.mlp.dense_4h_to_h(_gelu(layer.mlp.dense_h_to_4h(m)))
        logits = self.lm_head(self.transformer.final_layernorm(x))
        return logits[None], new_cache

    @torch.inference_mode()
    def generate(self, input_ids: torch.Tensor, *, max_new_tokens: int, streamer: Any = None,
                 stopping_criteria: Any = None, do_sample: bool = False, temperature: float = 1.0,
                 eos_token_id: int | list[int] | None = None, **_: Any) -> torch.Tensor:
        stops = set(eos_token_id if isinstance(eos_token_id, list) else [eos_token_id] if eos_token_id else [])
        ids = [int(i) for i in input_ids[0]]
        if streamer is not None:
            streamer.put(input_ids.cpu())
        step = input_ids.to(self.device)
        cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        try:
            for _step in range(max_new_tokens):
                logits, cache = self(step, cache, full_ids=ids)
                last = logits[0, -1].float()
                if do_sample and temperature > 0:
                    nxt = int(torch.multinomial(torch.softmax(last / temperature, dim=-1), 1))
                else:
                    nxt = int(torch.argmax(last))
                ids.append(nxt)
                if streamer is not None:
                    streamer.put(torch.tensor([nxt]))
                if nxt in stops:
                    break
                current = torch.tensor([ids])
                if stopping_criteria is not None and bool(stopping_criteria(current, last[None]).all()):
                    break
                step = torch.tensor([[nxt]], device=self.device)
        finally:
            if streamer is not None:
                streamer.end()
        return torch.tensor([ids])


def load_v1_tokenizer(model_dir: Path) -> V1Tokenizer:
    """ice_text.model, with num_image_tokens from tokenizer_config.json (20000 in the real model)."""
    import json

    model_file = model_dir / "ice_text.model"
    if not model_file.is_file():
        raise LLMError(f"{model_dir}: no ice_text.model (ChatGLM-6B's tokenizer file); copy it from the "
                       "model's original download into the folder")
    cfg_path = model_dir / "tokenizer_config.json"
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
        return V1Tokenizer(model_file, num_image_tokens=int(cfg.get("num_image_tokens", 20000)))
    except (OSError, ValueError, RuntimeError) as exc:
        raise LLMError(f"{model_dir}: cannot read the tokenizer: {exc}") from exc


def load_v1_model(model_dir: Path, config: dict[str, Any], dtype: Any) -> ChatGLM6B:
    from kbqa.llm.glm.weights import checkpoint_files, read_tensors

    with torch.device("meta"):
        model = ChatGLM6B(config)
    state: dict[str, Any] = {}
    for path in checkpoint_files(model_dir):
        for name, tensor in read_tensors(path):
            if not name.endswith("inv_freq"):
                state[name] = tensor.to(dtype)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise LLMError(f"the weights do not fit a ChatGLM-6B config (missing {sorted(missing)[:4]}, unexpected "
                       f"{sorted(unexpected)[:4]}); int4 checkpoints are not supported natively")
    rot = model.head_dim // 2
    model.inv_freq = (1.0 / (10000 ** (torch.arange(0, rot, 2).float() / rot))).half().float()
    return model.eval()
