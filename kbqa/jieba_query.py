"""jieba for a short text without loading its whole dictionary: the same words in ~5 ms instead of ~0.5 s.

`jieba.Tokenizer.initialize()` unmarshals ~500,000 dictionary entries before it can cut one
query, which is most of a fresh `kbqa search` for a Chinese question. jieba only ever looks up
substrings of the text it cuts (the DAG, the route, the HMM buffer check and the search-mode
2/3-grams all read `FREQ[text[i:j]]`), so a `jieba.Tokenizer` whose `FREQ` holds just the
entries that are substrings of the text (at most 16 characters: jieba's longest entry) and
the full dictionary's `total` cuts it exactly as the full one does.

The dictionary is copied once into ``<models dir>/jieba-dict-<key>/freq.sqlite`` (~2 s),
keyed by jieba's version and dictionary file; tests/unit/test_jieba_query.py compares the
two on the sample texts.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

from kbqa.artefacts import LookupTable, ensure_artefact, source_key, write_table
from kbqa.errors import KbqaError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
NAME = "jieba-dict"
_META = "meta.json"


def _dict_file() -> Path:
    spec = importlib.util.find_spec("jieba")
    if spec is None or not spec.submodule_search_locations:
        raise KbqaError("jieba is not installed: pip install jieba")
    return Path(next(iter(spec.submodule_search_locations))) / "dict.txt"


def _fill(folder: Path) -> None:
    import jieba

    jieba.setLogLevel(logging.WARNING)
    tok = jieba.Tokenizer()
    tok.initialize()
    write_table(folder / "freq.sqlite", ((word, int(freq), 0.0) for word, freq in tok.FREQ.items()))
    meta = {"format": FORMAT_VERSION, "total": int(tok.total), "max_chars": max(map(len, tok.FREQ)),
            "entries": len(tok.FREQ)}
    (folder / _META).write_text(json.dumps(meta), encoding="utf-8")


def ensure_dictionary(root: Path | None = None) -> Path:
    """The copied dictionary folder for the installed jieba, copying it if needed."""
    import jieba

    source = _dict_file()
    if not source.is_file():
        raise KbqaError(f"jieba's dictionary {source} is missing")
    key = source_key([source], FORMAT_VERSION, jieba.__version__)
    return ensure_artefact(NAME, key, _fill, marker=_META, root=root)


class QueryJieba:
    """`cut_for_search` with the default dictionary, reading only the entries a text can use."""

    def __init__(self, root: Path | None = None) -> None:
        folder = ensure_dictionary(root)
        try:
            meta = json.loads((folder / _META).read_text(encoding="utf-8"))
            if meta.get("format") != FORMAT_VERSION:
                raise ValueError(f"format {meta.get('format')}, expected {FORMAT_VERSION}")
            self.total, self.max_chars = int(meta["total"]), int(meta["max_chars"])
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise KbqaError(f"{folder}: unreadable jieba dictionary copy ({exc}); delete the folder") from exc
        self._table = LookupTable(folder / "freq.sqlite")

    def tokenizer_for(self, texts: list[str]) -> Any:
        """A `jieba.Tokenizer` that cuts each of `texts` (or their substrings) like the full dictionary.

        (Entries for other strings would change nothing: jieba never looks them up.)"""
        import jieba

        m = self.max_chars
        found = self._table.get(t[i:j] for t in texts for i in range(len(t))
                                for j in range(i + 1, min(len(t), i + m) + 1))
        tok = jieba.Tokenizer()
        tok.FREQ = {word: freq for word, (freq, _) in found.items()}
        tok.total = self.total
        tok.initialized = True
        return tok

    def cut_for_search(self, text: str) -> list[str]:
        return list(self.tokenizer_for([text]).cut_for_search(text))

    def close(self) -> None:
        self._table.close()
