"""Collects text under a heading path and cuts it into Sections at each heading.

Shared by the markdown, docx and html loaders, which all see a stream of
"heading of level n" and "block of text" events.
"""

from __future__ import annotations

from kbqa.schema import Section

HEADING_SEP = " > "


class HeadingSections:
    """Feed `heading()` and `text()` in document order; `finish()` returns the Sections.

    A section's text starts with its own heading title (so the title is searchable),
    then its body; its `heading` is the path of titles, outermost first. A heading
    with no body of its own (e.g. an H1 followed directly by an H2) yields no section;
    its title still appears in the path of the sections below it.
    """

    def __init__(self, page: int | None = None) -> None:
        self._stack: list[tuple[int, str]] = []
        self._title = ""
        self._body: list[str] = []
        self._page = page
        self.sections: list[Section] = []

    def heading(self, level: int, title: str) -> None:
        title = " ".join(title.split())
        if not title:
            return
        self._flush()
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, title))
        self._title = title

    def text(self, block: str) -> None:
        if block.strip():
            self._body.append(block.rstrip())

    def _flush(self) -> None:
        body = "\n".join(self._body).strip("\n")
        self._body = []
        if not body.strip():
            return
        text = f"{self._title}\n{body}" if self._title else body
        path = HEADING_SEP.join(title for _, title in self._stack)
        self.sections.append(Section(text=text, page=self._page, heading=path))

    def finish(self) -> list[Section]:
        self._flush()
        return self.sections
