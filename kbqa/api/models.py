"""Request and response bodies of the REST API (they are also its OpenAPI schema).

Response shapes repeat the library's stable JSON (`Source.to_json`, `Answer.to_json`,
`IngestReport.to_json`); extra keys the library adds later pass through.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def clean_text(value: str) -> str:
    """Untrusted text made safe for the pipeline: lone surrogates become '?', NUL is dropped."""
    return value.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")


Text = Annotated[str, AfterValidator(clean_text)]
MAX_QUESTION = 8000


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorOut(BaseModel):
    error: str = Field(description="What went wrong, for people.")


# -- knowledge bases -------------------------------------------------------------------
class KBCreate(BaseModel):
    name: Annotated[str, Field(min_length=1, max_length=64, examples=["manuals2"],
                               description="Letters, digits, '_', '-' or '.'; up to 64 characters.")]


class KBName(_Out):
    name: str


class KBList(BaseModel):
    knowledge_bases: list[KBName]


class KBInfo(_Out):
    """`KnowledgeBase.stats()`: counts, embedding model, splitter settings, folders."""

    name: str
    files: int
    failed_files: int
    chunks: int


class Deleted(BaseModel):
    deleted: str


# -- files -----------------------------------------------------------------------------
class FileOut(_Out):
    file: str
    status: str
    chunks: int
    size: int | None = None
    sha256: str | None = None
    reason: str | None = None
    warnings: list[str] = []
    indexed_at: float | None = None


class FileList(BaseModel):
    files: list[FileOut]


class FileResultOut(_Out):
    file: str
    status: Literal["added", "updated", "unchanged", "removed", "failed"]
    chunks: int = 0
    reason: str = ""
    warnings: list[str] = []


class UploadResultOut(BaseModel):
    name: str = Field(description="The name the client sent.")
    status: Literal["saved", "rejected"]
    saved_as: str = Field("", description="Where it was saved, relative to the knowledge folder.")
    reason: str = ""
    size: int = 0


# -- jobs ------------------------------------------------------------------------------
class Progress(BaseModel):
    done: int
    total: int | None = None
    current: str = ""


class ReportOut(_Out):
    files: list[FileResultOut]
    seconds: float
    chunks_embedded: int
    counts: dict[str, int]


class JobOut(BaseModel):
    id: str
    kb: str
    kind: Literal["sync", "rebuild", "upload"]
    status: Literal["queued", "running", "done", "failed"]
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    progress: Progress
    files: list[FileResultOut] = Field(description="Per-file results so far, in the order they finished.")
    report: ReportOut | None = Field(None, description="The full index report once done.")
    error: str | None = Field(None, description="Why the job failed.")
    uploads: list[UploadResultOut] = []


class JobList(BaseModel):
    jobs: list[JobOut]


class UploadOut(BaseModel):
    uploads: list[UploadResultOut]
    job: JobOut | None = Field(None, description="The indexing job started for the saved files (null if index=false).")


class ReindexIn(BaseModel):
    rebuild: bool = Field(False, description="Discard the index and build it again (e.g. after changing the "
                                             "embedding model); otherwise only new/changed files are indexed.")


# -- search and ask --------------------------------------------------------------------
class SearchIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"query": "how do I prime the pump", "k": 5}]})
    query: Annotated[Text, Field(min_length=1, max_length=MAX_QUESTION)]
    k: Annotated[int | None, Field(ge=1, le=100)] = None
    min_score: Annotated[float | None, Field(ge=0, le=1)] = None


class SourceOut(_Out):
    n: int
    file: str
    path: str
    page: int | None
    heading: str
    score: float
    text: str


class SearchOut(BaseModel):
    sources: list[SourceOut]


class Turn(BaseModel):
    role: Literal["user", "assistant", "system"]
    content: Annotated[Text, Field(max_length=100_000)]


class AskIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"question": "How do I prime the pump?"}, {
        "question": "And then?", "history": [{"role": "user", "content": "How do I prime the pump?"},
                                             {"role": "assistant", "content": "Open valve V3 [1]."}],
        "stream": True}]})
    question: Annotated[Text, Field(min_length=1, max_length=MAX_QUESTION)]
    history: Annotated[list[Turn], Field(max_length=200)] = Field(
        default_factory=list, description="The conversation so far, oldest first.")
    k: Annotated[int | None, Field(ge=1, le=50)] = Field(None, description="Number of sources (answer.max_sources).")
    min_score: Annotated[float | None, Field(ge=0, le=1)] = Field(
        None, description="Refusal threshold override (answer.min_score).")
    stream: bool = Field(False, description="Answer as Server-Sent Events: `token` events with text pieces, then "
                                            "one `answer` event with the final answer JSON (or an `error` event).")
    explain: bool = Field(False, description="Add mode, model, cited, note, standalone_question, language, tokens.")


class AnswerOut(_Out):
    """`Answer.to_json()`: the stable `kbqa ask --json` shape."""

    answer: str
    refused: bool
    sources: list[SourceOut]
    timings_ms: dict[str, float]


# -- OpenAI-compatible -----------------------------------------------------------------
class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: Text | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Annotated[str, Field(max_length=32)]
    content: Annotated[Text, Field(max_length=100_000)] | Annotated[list[ContentPart], Field(max_length=100)] | None \
        = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatCompletionIn(BaseModel):
    """OpenAI's chat completion request; `model` names the knowledge base. Unknown fields are ignored."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"model": "manuals", "messages": [{"role": "user", "content": "How do I prime the pump?"}]},
        {"model": "manuals", "stream": True, "messages": [{"role": "system", "content": "Be brief."},
                                                           {"role": "user", "content": "How do I prime the pump?"}]}]})
    model: Annotated[str, Field(min_length=1, max_length=128, description="The knowledge base to ask.")]
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=200)]
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    k: Annotated[int | None, Field(ge=1, le=50)] = Field(None, description="kbqa extension: number of sources.")
    min_score: Annotated[float | None, Field(ge=0, le=1)] = Field(
        None, description="kbqa extension: refusal threshold override.")


class ModelOut(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "kbqa"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelOut]


class ChatChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatChoiceMessage
    finish_reason: str


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletionOut(BaseModel):
    """OpenAI's chat.completion, plus `sources` (the cited passages) and `kbqa` (how it was answered)."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    sources: list[SourceOut]
    kbqa: dict[str, Any]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    auth: bool = Field(description="Whether requests must carry a bearer token.")
