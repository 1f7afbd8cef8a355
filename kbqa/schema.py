"""Plain data passed between pipeline stages.

Dataclasses, not pydantic: they are created by the million in the hot path.
langchain `Document` appears only at the edges (see `to_document`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from langchain_core.documents import Document


@dataclass(frozen=True, slots=True)
class Section:
    """A unit of text a loader produces: one PDF page, one docx heading section, one sheet.

    `page` is 1-based for paged formats (pdf, pptx slide) and None otherwise.
    `heading` is the heading path, outermost first, joined by " > " ("" if none).
    """

    text: str
    page: int | None = None
    heading: str = ""


@dataclass(frozen=True, slots=True)
class LoadedFile:
    """What a loader returns for one file: its sections plus non-fatal notes.

    `warnings` carries things a user should know but that did not stop the load,
    e.g. "repaired mojibake", "page 3 OCR'd", "2 undecodable bytes replaced".
    """

    sections: list[Section]
    warnings: list[str] = field(default_factory=list)
    encoding: str | None = None


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a file that is embedded and searched.

    `id` is a stable content hash (hex); `int_id` its 63-bit integer form for FAISS.
    `start` is the character offset of the chunk inside its section's text.
    """

    id: str
    int_id: int
    text: str
    file: str
    path: str
    page: int | None
    heading: str
    start: int


@dataclass(slots=True)
class Source:
    """A retrieved chunk as shown to users: the stable `--json` source shape."""

    n: int
    file: str
    path: str
    page: int | None
    heading: str
    score: float
    text: str
    chunk_id: str = ""

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("chunk_id")
        d["score"] = round(self.score, 4)
        return d

    def to_document(self) -> Document:
        from langchain_core.documents import Document

        meta = self.to_json()
        meta.pop("text")
        meta["chunk_id"] = self.chunk_id
        return Document(page_content=self.text, metadata=meta)


FileStatus = Literal["added", "updated", "unchanged", "removed", "failed"]


@dataclass(slots=True)
class FileResult:
    """The outcome for one file in an ingest run."""

    file: str
    status: FileStatus
    chunks: int = 0
    reason: str = ""
    warnings: list[str] = field(default_factory=list)


@dataclass(slots=True)
class IngestReport:
    """Per-file outcomes of `KnowledgeBase.add` / `kbqa index`, plus timings."""

    files: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0
    chunks_embedded: int = 0

    def by_status(self, status: FileStatus) -> list[FileResult]:
        return [f for f in self.files if f.status == status]

    @property
    def added(self) -> list[FileResult]:
        return self.by_status("added")

    @property
    def updated(self) -> list[FileResult]:
        return self.by_status("updated")

    @property
    def unchanged(self) -> list[FileResult]:
        return self.by_status("unchanged")

    @property
    def removed(self) -> list[FileResult]:
        return self.by_status("removed")

    @property
    def failed(self) -> list[FileResult]:
        return self.by_status("failed")

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_json(self) -> dict[str, Any]:
        return {
            "files": [asdict(f) for f in self.files],
            "seconds": round(self.seconds, 3),
            "chunks_embedded": self.chunks_embedded,
            "counts": {s: len(self.by_status(s)) for s in ("added", "updated", "unchanged", "removed", "failed")},
        }


@dataclass(frozen=True, slots=True)
class Retrieved:
    """Streamed before the model's first token: the sources the answer will be written from,
    so a reader sees where the answer comes from while a CPU model is still reading them."""

    sources: list[Source]


AnswerMode = Literal["generative", "extractive", "refused"]


@dataclass(slots=True)
class Answer:
    """What `KnowledgeBase.ask` returns; `to_json` is the stable `kbqa ask --json` shape.

    `text` keeps `[n]` markers; every marker maps to the source with that `n` (markers
    that point to nothing are removed before the answer is returned). `sources` are the
    sources the answer was built from, numbered as in the prompt; `cited` lists the `n`s the
    text actually cites. `mode` says what produced the text: the LLM ('generative'), the
    best-matching source sentences ('extractive'), or nothing relevant found ('refused').
    """

    text: str
    refused: bool
    sources: list[Source]
    timings_ms: dict[str, float] = field(default_factory=dict)
    mode: AnswerMode = "generative"
    model: str = ""
    question: str = ""
    standalone_question: str = ""
    language: str = "en"
    cited: list[int] = field(default_factory=list)
    note: str = ""
    """Why this mode answered, for users: e.g. 'the LLM does not answer Chinese'."""
    tokens: int = 0
    """Tokens the LLM generated (0 if it was not called)."""

    def to_json(self, extended: bool = False) -> dict[str, Any]:
        """The stable `kbqa ask --json` shape (DESIGN.md); `extended` adds how it was answered."""
        data: dict[str, Any] = {
            "answer": self.text,
            "refused": self.refused,
            "sources": [s.to_json() for s in self.sources],
            "timings_ms": {k: round(v, 1) for k, v in self.timings_ms.items()},
        }
        if extended:
            data.update(mode=self.mode, model=self.model, cited=self.cited, note=self.note,
                        standalone_question=self.standalone_question, language=self.language, tokens=self.tokens)
        return data
