"""Bad inputs through every entry point a user has: `kbqa index PATH`, `KnowledgeBase.add`, the upload
path of the browser app (`save_uploads` + `sync`) and the REST API's upload endpoint.

For each input: no crash or traceback; failed files reported with a reason, next to good files
that are still indexed; `kbqa index` exits 1 when a file failed; nothing written outside the
knowledge base's knowledge/ and vector_store/ folders (the whole tmp tree, the source folder and an
"outside" folder are snapshotted before and after); the index on disk stays consistent. The counts
are printed at the end of the run ("bad inputs: ...").
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import bad_corpus as bc
import pytest
from fastapi.testclient import TestClient
from reliability_tools import changes, fake_env, fake_settings, index_problems, record, snapshot

from kbqa.api import APISettings, create_app
from kbqa.errors import KbqaError
from kbqa.kb import KnowledgeBase
from kbqa.schema import FileResult, IngestReport
from kbqa.testing import FakeChatModel, FakeEmbeddings
from kbqa.tokenize import Tokenizer
from kbqa.uploads import UploadLimits, UploadResult, save_uploads

pytestmark = pytest.mark.reliability

SECTION = "bad inputs"
_TOKENIZER = Tokenizer()


@dataclass
class Tally:
    """Outcomes of one entry point; `problems` lists every outcome that breaks a rule.

    reported: refused with a reason (failed in the index report, rejected upload, KbqaError) or
    indexed with a warning naming what was wrong; sanitised: a hostile upload name saved under a
    clean one; ignored: links leading nowhere and FIFOs, never followed or opened.
    """

    entry: str
    tried: int = 0
    reported: int = 0
    sanitised: int = 0
    saved: int = 0
    ignored: int = 0
    indexed: int = 0
    crashes: int = 0
    wrongly_accepted: int = 0
    good_lost: int = 0
    written_outside: int = 0
    corrupt_indexes: int = 0
    server_errors: int = 0
    problems: list[str] = field(default_factory=list)

    def bad(self, kind: str, message: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        self.problems.append(f"[{self.entry}] {kind}: {message}")

    def done(self) -> None:
        record(SECTION, **{"inputs tried": self.tried, "crashes": self.crashes, "reported": self.reported,
                           "sanitised names": self.sanitised, "uploads saved inside": self.saved,
                           "non-files ignored": self.ignored,
                           "good indexed": self.indexed, "wrongly accepted": self.wrongly_accepted,
                           "good lost": self.good_lost, "written outside": self.written_outside,
                           "corrupt indexes": self.corrupt_indexes, "5xx": self.server_errors})
        record(f"{SECTION} / {self.entry}", tried=self.tried, reported=self.reported, crashes=self.crashes,
               problems=len(self.problems))
        assert not self.problems, "\n".join(self.problems)


@dataclass
class Corpus:
    root: Path
    src: Path
    outside: Path
    items: list[bc.Bad]
    uploads: list[bc.Upload]

    def home(self, name: str) -> Path:
        home = self.root / name
        home.mkdir()
        return home

    def guarded(self, home: Path) -> list[Path]:
        """The only places an entry point may write: the KB's two folders."""
        return [home / "knowledge" / "kb", home / "vector_store" / "kb"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    root = tmp_path_factory.mktemp("reliability")
    outside = root / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "target.txt").write_text("outside the knowledge base: must never change")
    items = bc.build_folder(root / "src")
    uploads = bc.upload_items(items, root / "src")
    hostile = [u for u in [*uploads, *TRAP_UPLOADS] if not u.what.startswith("folder corpus")]
    record(SECTION, **{"distinct bad inputs": sum(1 for i in items if i.expect != "good") + len(hostile)})
    yield Corpus(root, root / "src", outside, items, uploads)
    shutil.rmtree(root, ignore_errors=True)  # the 100 MB file and every KB's copy of it


def _check_report(tally: Tally, corpus: Corpus, results: dict[str, FileResult], kb: KnowledgeBase) -> None:
    """Classify each corpus entry by the index report (see bad_corpus's Expect)."""
    for item in corpus.items:
        tally.tried += 1
        r = results.get(item.name)
        if item.expect == "good":
            if r is not None and r.status in ("added", "unchanged", "updated") and r.chunks > 0:
                tally.indexed += 1
            else:
                tally.bad("good_lost", f"{item.name!r} ({item.what}) was not indexed: {r}")
        elif item.expect == "skip":
            if r is None and not (kb.knowledge_dir / item.name).exists():
                tally.ignored += 1
            elif r is not None and r.status == "failed" and r.reason:
                tally.reported += 1
            else:
                tally.bad("wrongly_accepted", f"{item.name!r} ({item.what}) was followed/opened: {r}")
        elif r is None:
            tally.bad("wrongly_accepted", f"{item.name!r} ({item.what}) is missing from the report")
        elif r.status == "failed":
            if r.reason:
                tally.reported += 1
            else:
                tally.bad("wrongly_accepted", f"{item.name!r} failed without a reason")
        elif item.expect == "report" and r.warnings:
            tally.reported += 1
        else:
            tally.bad("wrongly_accepted", f"{item.name!r} ({item.what}) was indexed without a word: {r}")


def _check_outside(tally: Tally, before: dict[str, Any], after: dict[str, Any], home: Path, root: Path) -> None:
    """Any change outside the KB's folders, except creating their parents (home/knowledge, home/vector_store)."""
    parents = {str((home / d).relative_to(root)) for d in ("knowledge", "vector_store")}
    for change in changes(before, after):
        if not (change[0] == "+" and change[1:] in parents):
            tally.bad("written_outside", change)


def _check_index(tally: Tally, kb: KnowledgeBase) -> None:
    for problem in index_problems(kb):
        tally.bad("corrupt_indexes", problem)
    hits = kb.search("When are fan blades cleaned?", k=3)
    if not hits or not hits[0].file.endswith("fans.md"):
        tally.bad("corrupt_indexes", f"search misses a good file: {[h.file for h in hits]}")


# -- entry points ---------------------------------------------------------------------------


def test_kbqa_index_cli(corpus: Corpus) -> None:
    """`kbqa index SRC` in a real process: exit 1 (files failed), JSON report, no traceback; rerun the same."""
    tally = Tally("kbqa index")
    home = corpus.home("cli-home")
    before = snapshot(corpus.root, corpus.guarded(home))
    code = "import sys; from kbqa.cli import main; sys.argv[0] = 'kbqa'; sys.exit(main())"
    runs = []
    # The second run (human-readable table) finds everything unchanged: failures must be reported again.
    for extra in (["--json"], []):
        runs.append(subprocess.run([sys.executable, "-c", code, "index", str(corpus.src), "--kb", "kb", *extra],
                                   env=fake_env(home, COLUMNS="250"), capture_output=True, text=True, timeout=180))
    for n, done in enumerate(runs, 1):
        if done.returncode != 1 or "Traceback" in done.stderr + done.stdout:
            tally.bad("crashes", f"run {n}: exit {done.returncode} (want 1), stderr: {done.stderr[-2000:]}")
    try:
        report = json.loads(runs[0].stdout)
    except ValueError:
        tally.bad("crashes", f"--json printed no JSON: {runs[0].stdout[-1000:]}")
        tally.done()
        return
    results = {f["file"]: FileResult(**f) for f in report["files"]}
    _check_report(tally, corpus, results, KnowledgeBase("kb", fake_settings(home)))
    table = runs[1].stdout.splitlines()
    for name, r in results.items():
        if r.status == "failed" and not any(name in line and "failed" in line for line in table):
            tally.bad("wrongly_accepted", f"{name!r} failed on the first run but the rerun's table does not say so")
    _check_outside(tally, before, snapshot(corpus.root, corpus.guarded(home)), home, corpus.root)
    with KnowledgeBase.open("kb", fake_settings(home)) as kb:
        _check_index(tally, kb)
    tally.done()


def test_knowledge_base_add(corpus: Corpus) -> None:
    """`KnowledgeBase.add(folder)`, then `add(file)` for every bad file on its own."""
    tally = Tally("KnowledgeBase.add")
    home = corpus.home("lib-home")
    before = snapshot(corpus.root, corpus.guarded(home))
    with KnowledgeBase.create("kb", fake_settings(home), embeddings=FakeEmbeddings()) as kb:
        try:
            report = kb.add(corpus.src)
        except Exception as exc:  # a crash: counted and shown, not raised
            tally.bad("crashes", f"add(folder) raised {type(exc).__name__}: {exc}")
            report = IngestReport()
        _check_report(tally, corpus, {f.file: f for f in report.files}, kb)
        for item in corpus.items:
            if item.expect == "good" or (corpus.src / item.name).is_dir() or item.name in bc.LOOPS:
                continue  # good files were checked above; links/up leads back to the folder; loops: below
            tally.tried += 1
            path = corpus.src / item.name
            try:
                single = kb.add(path)
            except KbqaError:
                tally.reported += 1  # e.g. a symlink loop: "no such file or folder"
                continue
            except Exception as exc:
                tally.bad("crashes", f"add({item.name!r}) raised {type(exc).__name__}: {exc}")
                continue
            mine = [f for f in single.files if f.file == path.name]
            if item.expect == "skip" and not mine:
                tally.ignored += 1
            elif any(f.status == "failed" and f.reason for f in mine) or (
                    item.expect == "report" and any(f.warnings for f in mine)):
                tally.reported += 1
            else:
                tally.bad("wrongly_accepted", f"add({item.name!r}) → {mine}")
        _check_index(tally, kb)
    _check_outside(tally, before, snapshot(corpus.root, corpus.guarded(home)), home, corpus.root)
    tally.done()


def _prepare_traps(home: Path, outside: Path) -> Path:
    """A knowledge folder holding symlinks that lead outside it (left by a user or an attacker)."""
    target = home / "knowledge" / "kb"
    target.mkdir(parents=True)
    (target / "escape-link.txt").symlink_to(outside / "target.txt")
    (target / "linked-dir").symlink_to(outside / "dir", target_is_directory=True)
    return target


TRAP_UPLOADS = [
    bc.Upload("escape-link.txt", b"overwrite through a symlink", "rejected", "a name that is a symlink to outside"),
    bc.Upload("trap.zip", bc._zip_bytes([("linked-dir/planted.txt", b"through a directory symlink")]), "members",
              "a zip member under a symlinked folder"),
]


def _check_uploads(tally: Tally, uploads: list[bc.Upload], results: list[UploadResult], target: Path) -> None:
    """Each upload: rejected with a reason, or saved strictly inside `target` under a clean name."""
    at = 0  # results come in upload order: one per plain file, one per zip member (or one for the zip)
    for up in uploads:
        tally.tried += 1
        shown = up.name.replace("\x00", "")
        if shown.lower().endswith(".zip"):
            mine = []
            while at < len(results) and (results[at].name == shown or results[at].name.startswith(shown + "/")):
                mine.append(results[at])
                at += 1
        else:  # the name may have been changed on the way (HTTP clients drop NUL, quote newlines)
            mine, at = results[at: at + 1], at + 1
        if not mine:
            tally.bad("wrongly_accepted", f"upload {up.name!r} ({up.what}) has no result")
            continue
        for r in mine:
            if r.status == "rejected":
                if not r.reason:
                    tally.bad("wrongly_accepted", f"{r.name!r} rejected without a reason")
                continue
            rel = PurePosixPath(r.saved_as)
            dest = target.joinpath(*rel.parts)
            if (rel.is_absolute() or ".." in rel.parts or "\x00" in r.saved_as or not dest.is_file()
                    or dest.is_symlink() or not dest.resolve().is_relative_to(target.resolve())):
                tally.bad("written_outside", f"{r.name!r} saved as {r.saved_as!r}")
        saved = [r for r in mine if r.status == "saved"]
        if up.expect == "rejected":
            if saved:
                tally.bad("wrongly_accepted", f"upload {up.name!r} ({up.what}) was saved: {saved}")
            else:
                tally.reported += 1
        elif up.expect == "inside":
            if not saved:
                tally.reported += 1  # refused (e.g. unsupported type) with a reason: fine too
            elif not up.what.startswith("folder corpus") and saved[0].saved_as != up.name:
                tally.sanitised += 1
            else:
                tally.saved += 1
        else:
            tally.reported += 1 if any(r.status == "rejected" for r in mine) else 0
            tally.sanitised += sum(1 for r in saved if r.saved_as != r.name.split("/", 1)[1])
    big = [r for r in results if r.status == "saved" and r.size > 10 << 20]
    for r in big:
        tally.bad("wrongly_accepted", f"{r.name!r}: {r.size} bytes extracted (zip bomb?)")


def test_browser_upload_path(corpus: Corpus) -> None:
    """The browser app's path: `save_uploads` into the knowledge folder, then `sync`."""
    tally = Tally("uploads + sync")
    home = corpus.home("ui-home")
    target = _prepare_traps(home, corpus.outside)
    before = snapshot(corpus.root, corpus.guarded(home))
    uploads = [*corpus.uploads, *TRAP_UPLOADS]
    settings = fake_settings(home)
    with KnowledgeBase.create("kb", settings, exist_ok=True, embeddings=FakeEmbeddings()) as kb:
        limits = UploadLimits.from_mb(settings.ui.max_upload_mb, settings.ui.max_upload_files)
        try:
            report = save_uploads(((u.name, u.data) for u in uploads), target, kb.loaders.supports, limits)
        except Exception as exc:
            tally.bad("crashes", f"save_uploads raised {type(exc).__name__}: {exc}")
            tally.done()
            return
        _check_uploads(tally, uploads, report.results, target)
        big_name = f"text/one-line-{bc.BIG_MB}mb.txt"
        with (corpus.src / big_name).open("rb") as fh:  # streamed from a file object, as Streamlit hands it over
            big = save_uploads([(big_name, fh)], target, kb.loaders.supports, limits)
        tally.tried += 1
        if [r.status for r in big.results] != ["saved"]:  # under ui.max_upload_mb: saved, then refused by the loader
            tally.bad("wrongly_accepted", f"{big_name}: {big.results}")
        try:
            ingest = kb.sync()
        except Exception as exc:
            tally.bad("crashes", f"sync after the uploads raised {type(exc).__name__}: {exc}")
            ingest = IngestReport()
        _check_synced(tally, corpus, report.saved + big.saved, {f.file: f for f in ingest.files})
        _check_index(tally, kb)
    _check_outside(tally, before, snapshot(corpus.root, corpus.guarded(home)), home, corpus.root)
    tally.done()


def _check_synced(tally: Tally, corpus: Corpus, saved: list[UploadResult], files: dict[str, FileResult]) -> None:
    """Saved copies of the folder corpus keep their verdicts: bad ones reported, good ones indexed."""
    verdict = {item.name.rsplit("/", 1)[-1]: item for item in corpus.items}
    for r in saved:
        f = files.get(r.saved_as)
        item = verdict.get(r.name.rsplit("/", 1)[-1])
        if f is None:
            tally.bad("wrongly_accepted", f"{r.saved_as!r} was saved but is missing from the index report")
        elif item is None or item.name.rsplit("/", 1)[-1] != r.saved_as.rsplit("/", 1)[-1]:
            continue  # a hostile-name upload or a zip member: saved text, any verdict is fine
        elif item.expect == "good" and f.status != "added":
            tally.bad("good_lost", f"{r.saved_as!r}: {f}")
        elif item.expect == "fail" and f.status != "failed":
            tally.bad("wrongly_accepted", f"{r.saved_as!r} ({item.what}): {f}")
        elif item.expect == "report" and f.status != "failed" and not f.warnings:
            tally.bad("wrongly_accepted", f"{r.saved_as!r} ({item.what}) indexed without a word: {f}")
        elif item.expect == "good":
            tally.indexed += 1
        else:
            tally.reported += 1


def test_api_upload_endpoint(corpus: Corpus) -> None:
    """POST /api/kbs/kb/files with every upload in one request, then the indexing job; never a 5xx."""
    tally = Tally("API upload")
    home = corpus.home("api-home")
    settings = fake_settings(home)
    app = create_app(settings, APISettings(), embeddings=FakeEmbeddings(), llm=FakeChatModel(), tokenizer=_TOKENIZER)
    uploads = [*corpus.uploads, *TRAP_UPLOADS]
    with TestClient(app, raise_server_exceptions=False) as client:
        statuses: list[int] = []

        def call(method: str, url: str, **kw: Any) -> Any:
            response = client.request(method, url, **kw)
            statuses.append(response.status_code)
            if response.status_code >= 500:
                tally.bad("server_errors", f"{method} {url} → {response.status_code}: {response.text[:500]}")
            return response

        assert call("POST", "/api/kbs", json={"name": "kb"}).status_code == 201
        target = home / "knowledge" / "kb"
        (target / "escape-link.txt").symlink_to(corpus.outside / "target.txt")
        (target / "linked-dir").symlink_to(corpus.outside / "dir", target_is_directory=True)
        before = snapshot(corpus.root, corpus.guarded(home))
        parts = [("files", (u.name, u.data, "application/octet-stream")) for u in uploads]
        r = call("POST", "/api/kbs/kb/files", files=parts)
        if r.status_code != 202:
            tally.bad("crashes", f"upload answered {r.status_code}: {r.text[:1000]}")
            tally.done()
            return
        body = r.json()
        results = [UploadResult(u["name"], u["status"], u["saved_as"], u["reason"], u["size"]) for u in body["uploads"]]
        _check_uploads(tally, uploads, results, target)
        job = _wait(call, body["job"]["id"])
        if job["status"] != "done":
            tally.bad("crashes", f"indexing job ended {job['status']}: {job.get('error')}")
        else:
            files = {f["file"]: FileResult(**f) for f in job["report"]["files"]}
            _check_synced(tally, corpus, [x for x in results if x.status == "saved"], files)
        # A request where nothing can be saved is a 4xx with per-file reasons, never a 5xx.
        refused = call("POST", "/api/kbs/kb/files", files=[("files", ("../..", b"x")), ("files", ("a.exe", b"MZ"))])
        if refused.status_code != 400 or len(refused.json().get("uploads", [])) != 2:
            tally.bad("wrongly_accepted", f"all-rejected upload → {refused.status_code} {refused.text[:300]}")
        tally.tried += 1
        listing = call("GET", "/api/kbs/kb/files")
        if listing.status_code != 200:
            tally.bad("crashes", f"GET files → {listing.status_code}")
        ask = call("POST", "/api/kbs/kb/ask", json={"question": "When are fan blades cleaned?"})
        if ask.status_code != 200 or ask.json()["refused"]:
            tally.bad("good_lost", f"ask after the bad uploads → {ask.status_code} {ask.text[:300]}")
    with KnowledgeBase.open("kb", settings, embeddings=FakeEmbeddings()) as kb:
        _check_index(tally, kb)
    _check_outside(tally, before, snapshot(corpus.root, corpus.guarded(home)), home, corpus.root)
    tally.done()


def _wait(call: Any, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = call("GET", f"/api/jobs/{job_id}").json()
        if job["status"] in ("done", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


# -- bugs this suite found outside its own files (fixed)


def test_add_of_a_symlink_loop_is_reported(corpus: Corpus) -> None:
    with KnowledgeBase.create("kb", fake_settings(corpus.home("loop-home")), embeddings=FakeEmbeddings()) as kb:
        for name in sorted(bc.LOOPS):
            with pytest.raises(KbqaError, match="loop"):
                kb.add(corpus.src / name)


def test_file_name_that_is_not_utf8_is_reported(tmp_path: Path) -> None:
    src = tmp_path / "src"
    bc.build_folder_minimal(src)
    with KnowledgeBase.create("kb", fake_settings(tmp_path / "home"), embeddings=FakeEmbeddings()) as kb:
        report = kb.add(src)
        results = {f.file: f for f in report.files}
        assert results["pumps.txt"].status == "added"
        bad = [f for f in report.files if f.file != "pumps.txt"]
        assert len(bad) == 1 and bad[0].status == "failed" and "UTF-8" in bad[0].reason
        json.dumps(report.to_json(), ensure_ascii=False).encode("utf-8")  # printable by the CLI
