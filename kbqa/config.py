"""Settings: one pydantic model, read from YAML, overridable by env and keyword.

Precedence (last wins): built-in defaults < configs/default.yaml (or the file given)
< environment `KBQA_*` < keyword overrides. Nested keys use `__` in env names, e.g.
`KBQA_EMBEDDING__MODEL=minilm`, `KBQA_RETRIEVAL__K=8`; `KBQA_HOME` sets `home`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kbqa.errors import ConfigError

PACKAGE_DEFAULT_CONFIG = Path(__file__).with_name("default.yaml")


class _Strict(BaseModel):
    # Env values are parsed as YAML, so KBQA_UI__PASSWORD=1234 arrives as an int: accept it for str fields.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)


class LoaderSettings(_Strict):
    ocr: bool = True
    """OCR pages that have no text layer (only those pages)."""
    ocr_min_chars: int = Field(default=20, ge=0)
    """A PDF page with fewer extracted characters than this is treated as scanned."""
    max_file_mb: float = Field(default=200.0, gt=0)
    """Any file larger than this is skipped and reported."""
    max_text_mb: float = Field(default=20.0, gt=0)
    """Plain-text-like files (txt, md, csv, json, html) larger than this are skipped and reported."""
    workers: Annotated[int, Field(ge=0, le=64)] | Literal["auto"] = 0
    """Processes that parse files while the main process embeds (0 = a thread instead);
    'auto' = processes only for PDF/Office-heavy batches and when cores are spare (kbqa.index.auto_workers)."""
    table_rows_per_chunk: int = Field(default=20, ge=1)
    """Tables (csv/xlsx) are cut into row groups of this size, each repeating the header."""


class SplitterSettings(_Strict):
    chunk_size: int = Field(default=400, ge=50, le=8000)
    """Target chunk length in characters."""
    chunk_overlap: int = Field(default=60, ge=0)

    @model_validator(mode="after")
    def _overlap_smaller(self) -> SplitterSettings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"splitter.chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_size ({self.chunk_size})"
            )
        return self


class EmbeddingSettings(_Strict):
    model: str = "use-multilingual"
    """'use-multilingual' (bundled, zh+en), 'minilm' (bundled, English), 'multilingual-e5'
    (multilingual-e5-small, zh+en, `pip install "kbqa[e5]"`), or a local sentence-transformers
    model directory (e.g. a downloaded bge-large-zh or m3e)."""
    batch_size: int = Field(default=64, ge=1)
    device: str = "auto"
    """'auto' (cuda → mps → cpu), 'cpu', 'cuda', 'cuda:1', 'mps'."""
    quantize: bool = True
    """Dynamic int8 quantisation of torch models on CPU (faster, same ranking); ignored on GPU."""


class RetrievalSettings(_Strict):
    k: int = Field(default=5, ge=1, le=100)
    fetch_k: int = Field(default=40, ge=1, le=1000)
    """Candidates taken from each of the dense and keyword indexes before fusion."""
    mode: Literal["hybrid", "dense", "keyword"] = "hybrid"
    rrf_k: int = Field(default=60, ge=1)
    dense_weight: float = Field(default=1.0, ge=0)
    keyword_weight: float = Field(default=1.0, ge=0)
    min_score: float = Field(default=0.0, ge=0, le=1)
    """Sources scoring below this (0–1 scale) are not returned."""
    fusion: Literal["linear", "rrf"] = "linear"
    """How dense and keyword results are ordered; the shown score is always the linear one."""
    reranker: str = "auto"
    """Rerank stage (kbqa/rerank.py): auto (the bundled English cross-encoder for Latin-script
    questions), none, or a local cross-encoder folder (every language)."""
    rerank_depth: int = Field(default=10, ge=1, le=200)
    """Places (pages or sections, after merging) the reranker reads, best fused first."""
    rerank_weight: float = Field(default=0.3, ge=0, le=1)
    """Share of the reranker's 0–1 score in a reranked place's relevance (the rest: fusion's)."""
    dense_floor: float | None = Field(default=None, ge=-1, le=1)
    dense_ceiling: float | None = Field(default=None, ge=-1, le=1)
    """Cosine similarities are mapped linearly from [floor, ceiling] onto the 0–1 scale. None (YAML
    `auto`) = the embedding model's own typical range: 0.1/0.7 for use-multilingual, minilm and
    local models, 0.75/0.92 for multilingual-e5 (whose cosines all sit in ~0.7–0.95)."""

    @field_validator("dense_floor", "dense_ceiling", mode="before")
    @classmethod
    def _auto(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("auto", "", "none", "null")):
            return None
        return value

    @model_validator(mode="after")
    def _range(self) -> RetrievalSettings:
        if self.dense_floor is not None and self.dense_ceiling is not None:
            self.dense_bounds((self.dense_floor, self.dense_ceiling), error=ValueError)
        return self

    def dense_bounds(self, model_range: tuple[float, float], error: type[Exception] = ConfigError
                     ) -> tuple[float, float]:
        """(floor, ceiling) in effect: the configured values, `model_range` where they are `auto`."""
        lo = model_range[0] if self.dense_floor is None else self.dense_floor
        hi = model_range[1] if self.dense_ceiling is None else self.dense_ceiling
        if hi <= lo:
            raise error(f"retrieval.dense_ceiling ({hi}) must exceed dense_floor ({lo})"
                        + ("" if self.dense_floor is not None and self.dense_ceiling is not None
                           else f" (the model's own range is {model_range[0]}–{model_range[1]})"))
        return lo, hi


class StoreSettings(_Strict):
    """Where a knowledge base's vectors live. The catalog (text, metadata, keyword index, stored
    vectors) is always local SQLite; these settings choose the vector backend for *new* knowledge
    bases (an existing one records its own: move it with `kbqa migrate`)."""

    backend: Literal["faiss", "milvus"] = "faiss"
    """Used when `uri` is empty: 'faiss' (vector_store/<kb>/vectors.faiss) or 'milvus'
    (embedded Milvus Lite in vector_store/<kb>/vectors.milvus.db)."""
    uri: str = ""
    """Vector backend URI, overrides `backend`: 'faiss'; a Milvus Lite file ('milvus-lite://vectors.db',
    'data/kb.db'; relative = inside the KB's index folder); a Milvus server ('http://host:19530')."""
    token: str = ""
    """Milvus server token ('user:password' or an API key); or env KBQA_STORE__TOKEN / MILVUS_TOKEN."""
    faiss_index: str = "Flat"
    """A faiss.index_factory string for the inner index ('Flat' = exact)."""
    milvus_index: Literal["FLAT", "HNSW", "IVF_FLAT", "IVF_SQ8", "AUTOINDEX"] = "FLAT"
    """Milvus index type of a new collection (FLAT = exact)."""

    @field_validator("uri")
    @classmethod
    def _check_uri(cls, uri: str) -> str:
        from kbqa.store.backends import parse_vector_uri

        try:
            parse_vector_uri(uri)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return uri

    @property
    def vector_uri(self) -> str:
        """The effective vector URI (credentials included, for connecting)."""
        if self.uri.strip():
            return self.uri.strip()
        return "milvus-lite" if self.backend == "milvus" else "faiss"


class LLMSettings(_Strict):
    backend: Literal["bundled", "transformers", "openai", "extractive", "fake"] = "bundled"
    """'bundled' (a GGUF run by llama.cpp: the model `model` names, default Qwen2.5-1.5B, zh + en),
    'transformers' (a local model directory: ChatGLM-6B/2/3, GLM-4, any HF chat model),
    'openai' (any OpenAI-compatible server), 'extractive' (no LLM: best sentences of the
    sources), 'fake' (deterministic, for tests)."""
    model: str = ""
    """transformers: the model directory; openai: the model name the server expects;
    bundled: a model name (`kbqa models list`: qwen2.5-1.5b — the default when empty —, qwen2.5-0.5b,
    smollm2) or the path of any .gguf file."""
    base_url: str = ""
    """openai: e.g. http://127.0.0.1:8000/v1 (vLLM, FastChat, Ollama, llama.cpp server, Zhipu)."""
    api_key: str = ""
    """openai: the key (or set KBQA_LLM__API_KEY / OPENAI_API_KEY); empty = 'none'."""
    languages: list[str] = Field(default_factory=list)
    """Languages the model answers well ('en', 'zh'); empty = the backend's own default.
    Questions in other languages get the extractive answer instead."""
    temperature: float = Field(default=0.1, ge=0, le=2)
    max_new_tokens: int = Field(default=384, ge=1, le=32768)
    context_window: int = Field(default=0, ge=0)
    """Tokens the model can see (prompt + answer); 0 = read it from the model."""
    device: str = "auto"
    """transformers: 'auto' (cuda → mps → cpu), 'cpu', 'cuda', 'cuda:1', 'mps'."""
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    quantize: int | None = None
    """transformers on CUDA: 4 or 8 loads the weights quantised by bitsandbytes (native ChatGLM/GLM-4 path
    included); on CPU it is an error naming the GGUF route."""
    trust_remote_code: bool = False
    """transformers: run the Python code a model folder ships (off: ChatGLM-6B/2/3 and GLM-4 load through
    kbqa's own code; other families with only remote code are refused with the reason)."""
    threads: int = Field(default=0, ge=0)
    """bundled: CPU threads for llama.cpp (0 = physical cores minus one, at least one)."""
    timeout_s: float = Field(default=120.0, gt=0)
    """openai: seconds to wait for the server."""

    @model_validator(mode="after")
    def _check(self) -> LLMSettings:
        if self.quantize not in (None, 4, 8):
            raise ValueError(f"llm.quantize must be 4, 8 or null (got {self.quantize})")
        if self.backend == "transformers" and not self.model:
            raise ValueError("llm.model must name a local model directory when llm.backend is 'transformers'")
        if self.backend == "openai" and not self.base_url:
            raise ValueError("llm.base_url must be set when llm.backend is 'openai' (e.g. http://127.0.0.1:8000/v1)")
        return self


class AnswerSettings(_Strict):
    min_score: float = Field(default=0.18, ge=0, le=1)
    """Refusal threshold: if no source scores at least this (0–1 scale), the answer is
    'not found in the knowledge base' and the LLM is not called. Calibrated on the dev set by
    benchmarks/calibrate_refusal.py (middle of the range with the best refusal accuracy at ≤ 5 % false refusals)."""
    refuse_unknown_terms: bool = True
    """Also refuse when the question names something specific (an identifier, acronym, product,
    non-dictionary word) that no chunk of the knowledge base contains."""
    max_sources: int = Field(default=5, ge=1, le=50)
    """Sources put into the prompt (best first, cut further to fit the model's window)."""
    fallback: Literal["auto", "never", "always"] = "auto"
    """'auto': answer extractively when the LLM cannot serve the question's language or its
    answer cites nothing the sources support; 'always': never call the LLM; 'never': always
    return the LLM's answer."""
    small_model_guard: Literal["auto", "on", "off"] = "auto"
    """Hold a generated answer to its sources: keep only sentences a source supports (re-cited by
    that source) and quote the best-matching source sentences under it. 'auto' = for small
    models (the bundled one), whose own answers and markers are often wrong."""
    history_turns: int = Field(default=3, ge=0, le=50)
    """Previous question/answer pairs used to condense a follow-up into a standalone question."""
    extractive_sentences: int = Field(default=4, ge=1, le=20)
    """Most source sentences in an extractive answer (tuned by benchmarks/sweep_extractive.py)."""
    context_tokens: int = Field(default=600, ge=0, le=32768)
    """Tokens of source text in the prompt (the model's own tokenizer), shared by the sources:
    each keeps the sentences that bear on the question with their neighbours. On a CPU the prompt
    is most of the wait (benchmarks/eval_llm.py). 0 = whole sources, as many as the window holds."""


class UISettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8501, ge=1, le=65535)
    password: str = ""
    """Required (or env KBQA_UI__PASSWORD) whenever host is not a loopback address."""
    max_upload_mb: float = Field(default=200.0, gt=0)
    """Per uploaded file (a .zip counts its members after extraction too)."""
    max_upload_files: int = Field(default=500, ge=1)
    """Files per upload, zip members included."""
    language: Literal["auto", "en", "zh"] = "auto"
    """UI text language; 'auto' follows the browser."""


class APISettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    token: str = ""
    """Bearer token every request must carry (`Authorization: Bearer …`); required whenever host is
    not a loopback address. Env: KBQA_API__TOKEN."""
    cors_origins: list[str] = Field(default_factory=list)
    """Browser origins allowed to call the API (e.g. ['http://localhost:3000']); empty = CORS off."""
    max_request_mb: float = Field(default=1024.0, gt=0)
    """Largest upload request body; each file in it is also held to ui.max_upload_mb / ui.max_upload_files."""
    jobs_kept: int = Field(default=200, ge=1)
    """Finished indexing jobs remembered for polling (oldest forgotten first; jobs live in memory only)."""


class Settings(_Strict):
    home: Path = Path(".")
    """Holds knowledge/<kb>/ and vector_store/<kb>/."""
    default_kb: str = "samples"
    loaders: LoaderSettings = LoaderSettings()
    splitter: SplitterSettings = SplitterSettings()
    embedding: EmbeddingSettings = EmbeddingSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    store: StoreSettings = StoreSettings()
    llm: LLMSettings = LLMSettings()
    answer: AnswerSettings = AnswerSettings()
    ui: UISettings = UISettings()
    api: APISettings = APISettings()

    @property
    def knowledge_dir(self) -> Path:
        return self.home / "knowledge"

    @property
    def vector_store_dir(self) -> Path:
        return self.home / "vector_store"


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# KBQA_* variables that are read where they are used, not settings: the config file's path and the
# model cache (`kbqa.models.assemble.models_dir`; set for a whole machine, not per config).
_NOT_SETTINGS = ("KBQA_CONFIG", "KBQA_MODELS_DIR")


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith("KBQA_") or name in _NOT_SETTINGS:
            continue
        keys = name[len("KBQA_"):].lower().split("__")
        node = out
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = yaml.safe_load(value) if value else value
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_settings(
    path: str | Path | None = None,
    environ: dict[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build `Settings` from a YAML file, `KBQA_*` env variables and keyword overrides.

    `path` defaults to `$KBQA_CONFIG`, then `$KBQA_HOME/configs/default.yaml` if it exists,
    then the defaults shipped with the package. Keyword overrides may be nested dicts.
    """
    env = dict(os.environ if environ is None else environ)
    data: dict[str, Any] = {}
    candidate = path or env.get("KBQA_CONFIG")
    if candidate is None:
        home_cfg = Path(env.get("KBQA_HOME", ".")) / "configs" / "default.yaml"
        candidate = home_cfg if home_cfg.is_file() else PACKAGE_DEFAULT_CONFIG
    if Path(candidate).is_file() or path or env.get("KBQA_CONFIG"):
        data = _read_yaml(Path(candidate))
    data = _deep_merge(data, _env_overrides(env))
    data = _deep_merge(data, overrides)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']} (got {err.get('input')!r})"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid settings from {candidate}: {problems}") from exc
