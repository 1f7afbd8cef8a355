"""Write a ChatGLM2/3 folder as a GGUF file for llama.cpp (kbqa's bundled backend), without remote code.

llama.cpp's own convert_hf_to_gguf.py reads the vocabulary through the folder's
`tokenization_chatglm.py` (AutoTokenizer, trust_remote_code), which fails on current
transformers; the vocabulary is just the sentencepiece pieces plus the special tokens, so this
writes the same metadata as that converter's `set_vocab_chatglm3` (tokenizer model "llama",
pre-tokenizer "chatglm-spm", CONTROL types for the specials, [PAD<id>] for the padding rows)
and the tensors under llama.cpp's CHATGLM names. GLM-4 (tiktoken) is not handled here: use
llama.cpp's converter for it.

    python -m kbqa.llm.glm.gguf_export /models/chatglm3-6b chatglm3-6b-f16.gguf [--f32]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kbqa.embeddings.st_config import read_json_object
from kbqa.errors import LLMError
from kbqa.llm.glm.family import detect_family
from kbqa.llm.glm.tokenizers import SentencePieceGlmTokenizer
from kbqa.llm.glm.weights import checkpoint_files, read_tensors

# SentencePieceTokenTypes as llama.cpp's gguf writer numbers them
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
# ChatGLM3's prompt as its build_chat_input makes it, for llama-cpp-python's chat handler.
CHATGLM3_TEMPLATE = ("[gMASK]sop{% for m in messages %}<|{{ m['role'] }}|>\n {{ m['content'] }}{% endfor %}"
                     "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def _vocab(tok: SentencePieceGlmTokenizer, vocab_size: int) -> tuple[list[bytes], list[float], list[int]]:
    sp = tok.sp
    n_sp = sp.vocab_size()
    names = {i: t for t, i in tok.specials.items()}
    tokens: list[bytes] = []
    scores: list[float] = []
    types: list[int] = []
    for i in range(vocab_size):
        if i >= n_sp:
            if i in names:
                tokens.append(names[i].encode())
                types.append(CONTROL)
            else:
                tokens.append(f"[PAD{i}]".encode())
                types.append(UNUSED)
            scores.append(0.0)
            continue
        piece = {0: "<unk>", 1: "<bos>", 2: "<eos>"}.get(i, sp.id_to_piece(i))
        tokens.append(piece.encode("utf-8"))
        scores.append(float(sp.get_score(i)))
        kind = NORMAL
        if sp.is_unknown(i):
            kind = UNKNOWN
        elif sp.is_control(i):
            kind = CONTROL
        elif sp.is_unused(i):
            kind = UNUSED
        elif sp.is_byte(i):
            kind = BYTE
        types.append(kind)
    return tokens, scores, types


def export_gguf(model_dir: Path, out: Path, *, f32: bool = False) -> Path:
    try:
        import gguf
    except ImportError as exc:
        raise LLMError("writing a GGUF needs the gguf package: pip install gguf") from exc
    import numpy as np

    config = read_json_object(model_dir / "config.json", LLMError)
    family = detect_family(model_dir, config).family
    if family not in ("chatglm2", "chatglm3"):
        raise LLMError(f"{model_dir}: kbqa's GGUF export handles ChatGLM2/3; for {family} use llama.cpp's "
                       "convert_hf_to_gguf.py")
    tok = SentencePieceGlmTokenizer(model_dir / "tokenizer.model", roles=family == "chatglm3")
    heads, hidden = int(config["num_attention_heads"]), int(config["hidden_size"])
    vocab_size = int(config.get("padded_vocab_size") or config["vocab_size"])
    layers = int(config["num_layers"])
    writer = gguf.GGUFWriter(str(out), "chatglm")
    writer.add_name(model_dir.name)
    writer.add_context_length(int(config.get("seq_length") or 8192))
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(int(config["ffn_hidden_size"]))
    writer.add_block_count(layers)
    writer.add_head_count(heads)
    writer.add_head_count_kv(int(config.get("multi_query_group_num") or heads))
    writer.add_layer_norm_rms_eps(float(config.get("layernorm_epsilon", 1e-5)))
    writer.add_rope_dimension_count(int(config.get("kv_channels") or hidden // heads) // 2)
    writer.add_rope_freq_base(10000.0 * float(config.get("rope_ratio") or 1))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if f32 else gguf.LlamaFileType.MOSTLY_F16)
    tokens, scores, types = _vocab(tok, vocab_size)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("chatglm-spm")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_add_bos_token(False)
    writer.add_eos_token_id(tok.eos_token_id)
    writer.add_pad_token_id(tok.pad_token_id)
    writer.add_unk_token_id(tok.pad_token_id)
    if family == "chatglm3":
        writer.add_eot_token_id(tok.special("<|user|>"))
        writer.add_chat_template(CHATGLM3_TEMPLATE)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.CHATGLM, layers)
    for path in checkpoint_files(model_dir):
        for name, tensor in read_tensors(path):
            bare = name.removeprefix("transformer.")
            if bare.endswith("rotary_pos_emb.inv_freq"):
                continue
            target = names.get_name(bare, try_suffixes=(".weight", ".bias"))
            if target is None:
                raise LLMError(f"{path}: no GGUF name for tensor {name!r}")
            data: Any = tensor.float().numpy()
            # llama.cpp keeps 1-D tensors (norms, biases) in f32, as its converter does
            if not f32 and data.ndim > 1:
                data = data.astype(np.float16)
            writer.add_tensor(target, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a ChatGLM2/3 folder as a GGUF for llama.cpp.")
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--f32", action="store_true", help="keep float32 (default: float16 matrices)")
    args = parser.parse_args()
    try:
        print(export_gguf(args.model_dir, args.out, f32=args.f32))
    except LLMError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
