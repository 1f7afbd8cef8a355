"""kbqa in the browser. UI only: every action calls the `KnowledgeBase` library.

Run `kbqa ui` (http://127.0.0.1:8501), or `streamlit run app.py --server.address 127.0.0.1`
(without a password the app refuses to serve any non-loopback address). Settings are read as
everywhere in kbqa: `configs/default.yaml` in KBQA_HOME, `KBQA_CONFIG`, env `KBQA_*`.
Models and knowledge bases load once per server process (`st.cache_resource`); each
browser session keeps its own chat per knowledge base.
"""

from __future__ import annotations

import hmac
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent
if (_ROOT / "kbqa").is_dir() and str(_ROOT) not in sys.path:  # `streamlit run` from another folder
    sys.path.insert(0, str(_ROOT))

import streamlit as st  # noqa: E402

from kbqa.config import EmbeddingSettings, LLMSettings, Settings, load_settings  # noqa: E402
from kbqa.embeddings import KbqaEmbeddings, make_embeddings  # noqa: E402
from kbqa.errors import KbqaError  # noqa: E402
from kbqa.index import ProgressFn, scan_folder  # noqa: E402
from kbqa.kb import KnowledgeBase  # noqa: E402
from kbqa.llm import ChatBackend, make_chat_model  # noqa: E402
from kbqa.preview import render_page_png  # noqa: E402
from kbqa.schema import Answer, FileResult, IngestReport, Retrieved, Source  # noqa: E402
from kbqa.ui_launch import is_loopback  # noqa: E402
from kbqa.ui_text import LANGUAGE_NAMES, LANGUAGES, text  # noqa: E402
from kbqa.uploads import UploadLimits, save_uploads  # noqa: E402

ss = st.session_state


# -- resources shared by every session (one per server process) --------------------------
@st.cache_resource(show_spinner=False)
def _embeddings(spec: str) -> KbqaEmbeddings:
    emb = make_embeddings(EmbeddingSettings.model_validate_json(spec))
    emb.embed_query("warm up")  # load the weights now, under a spinner, not inside the first question
    return emb


@st.cache_resource(show_spinner=False)
def _llm(spec: str) -> ChatBackend | None:
    return make_chat_model(LLMSettings.model_validate_json(spec))


@st.cache_resource(show_spinner=False)
def _work_lock() -> threading.Lock:
    """One model and one index writer per process: indexing and answering take turns."""
    return threading.Lock()


def _inject(settings: Settings) -> dict[str, Any]:
    return {"embeddings": _embeddings(settings.embedding.model_dump_json()),
            "llm": _llm(settings.llm.model_dump_json())}


@st.cache_resource(show_spinner=False)
def _open_kb(name: str, spec: str) -> KnowledgeBase:
    settings = Settings.model_validate_json(spec)
    return KnowledgeBase.open(name, settings, **_inject(settings))


def kb_for(name: str, settings: Settings) -> KnowledgeBase:
    return _open_kb(name, settings.model_dump_json())


@contextmanager
def busy(lang: str) -> Iterator[None]:
    lock = _work_lock()
    if not lock.acquire(blocking=False):
        with st.spinner(text(lang, "busy")):
            lock.acquire()
    try:
        yield
    finally:
        lock.release()


# -- small helpers -------------------------------------------------------------------------
def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


STREAM_REPAINT_S = 0.15
AVATARS = {"user": ":material/person:", "assistant": ":material/menu_book:"}
_STATUS_ICON = {"indexed": ":green[:material/check_circle:]", "unchanged": ":gray[:material/check_circle:]",
                "failed": ":red[:material/error:]"}
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+|~$])")
_MARKER = re.compile(r"\[(\d{1,2})\]")


def chunks_text(lang: str, n: int) -> str:
    return text(lang, "chunk_one" if n == 1 else "chunks", n=n)


def md_escape(s: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", s)


def answer_md(s: str) -> str:
    """Answer text as markdown: '$' never starts math, no image is ever fetched (a document could
    plant a tracking-image link for the LLM to repeat), [n] markers become small badges."""
    s = s.replace("$", r"\$").replace("![", r"!\[")
    return _MARKER.sub(lambda m: f" :blue-badge[{m.group(1)}]", s)


def ui_language(settings: Settings) -> str:
    if settings.ui.language != "auto":
        return settings.ui.language
    locale = getattr(st.context, "locale", None) or ""
    return "zh" if locale.lower().startswith("zh") else "en"


def flash(kb: str, kind: str, message: str, details: list[str] | None = None) -> None:
    """A note shown above the documents list of `kb` until the next one replaces it."""
    ss.setdefault("flash", {})[kb] = {"kind": kind, "text": message, "details": details or []}


# -- access --------------------------------------------------------------------------------
def exposure_guard(settings: Settings, lang: str) -> None:
    """Refuse to serve a knowledge base to the network without a password.

    `kbqa ui` binds to 127.0.0.1; a bare `streamlit run app.py` listens on every interface
    unless server.address is set, so the app checks where it is actually bound.
    """
    address = st.get_option("server.address") or ""
    if settings.ui.password or is_loopback(address):
        return
    st.error(text(lang, "exposed", address=address or "0.0.0.0"), icon=":material/lock_open:")
    st.stop()


def password_gate(settings: Settings, lang: str) -> None:
    """Stop the page here until the session has entered `ui.password` (when one is set)."""
    secret = settings.ui.password
    if not secret or ss.get("authed"):
        return
    _, mid, _ = st.columns([1, 2, 1])
    with mid:
        st.title(":material/menu_book: kbqa")
        with st.form("login"):
            st.subheader(text(lang, "locked_title"))
            given = st.text_input(text(lang, "password"), type="password", key="password_input")
            if st.form_submit_button(text(lang, "sign_in"), type="primary"):
                if hmac.compare_digest(given.encode(), secret.encode()):
                    ss["authed"] = True
                    st.rerun()
                time.sleep(1.0)  # slows down guessing
                st.error(text(lang, "wrong_password"))
    st.stop()


# -- indexing ------------------------------------------------------------------------------
def run_indexing(lang: str, label: str, work: Callable[[ProgressFn], IngestReport]) -> IngestReport | None:
    """Run `work` with a live progress bar; a library error becomes a message, not a crash."""
    with st.status(label, expanded=True) as status:
        bar = st.progress(0.0, text=text(lang, "preparing"))

        def progress(done: int, total: int, result: FileResult) -> None:
            bar.progress(min(done / max(total, 1), 1.0),
                         text=text(lang, "progress", done=done, total=total, file=result.file))

        try:
            with busy(lang):
                report = work(progress)
        except KbqaError as exc:
            status.update(label=text(lang, "error", msg=exc), state="error")
            return None
        status.update(label=text(lang, "index_done"), state="complete", expanded=False)
    return report


def remember_report(kb: str, report: IngestReport, lang: str, only: set[str] | None = None,
                    rejected: list[str] | None = None) -> None:
    files = [f for f in report.files if only is None or f.file in only]
    statuses = ss.setdefault("file_status", {}).setdefault(kb, {})
    for f in files:
        statuses[f.file] = f.status
    parts = [text(lang, f"n_{status}", n=n) for status in ("added", "updated", "unchanged", "removed", "failed")
             if (n := sum(1 for f in files if f.status == status))]
    summary = " · ".join([*parts, text(lang, "seconds", s=report.seconds)])
    details = [f"**{md_escape(f.file)}** — {md_escape(f.reason)}" for f in files if f.status == "failed"]
    details += rejected or []
    if details:
        flash(kb, "warning", text(lang, "index_failed_some", n=len(details)) + " · " + summary, details)
    else:
        flash(kb, "success", text(lang, "index_done") + " · " + summary)


def ensure_default_indexed(settings: Settings, lang: str) -> None:
    """First start: index the default knowledge base's folder if nothing of it is indexed yet."""
    if ss.get("default_checked"):
        return
    ss["default_checked"] = True
    name = settings.default_kb
    folder = settings.knowledge_dir / name
    if not folder.is_dir() or next(scan_folder(folder), None) is None:
        return
    try:
        kb = KnowledgeBase.create(name, settings, exist_ok=True, **_inject(settings))
        if kb.store.files():
            return
        kb.close()
        kb = kb_for(name, settings)
    except KbqaError as exc:
        st.error(text(lang, "error", msg=exc))
        return
    report = run_indexing(lang, text(lang, "first_run", kb=name), kb.sync)
    if report is not None:
        remember_report(name, report, lang)
        st.rerun()


def upload_and_index(kb: KnowledgeBase, files: list[Any], settings: Settings, lang: str) -> None:
    limits = UploadLimits.from_mb(settings.ui.max_upload_mb, settings.ui.max_upload_files)
    for f in files:
        f.seek(0)
    upload = save_uploads(((f.name, f) for f in files), kb.knowledge_dir, kb.loaders.supports, limits)
    rejected = [f"**{md_escape(r.name)}** — {md_escape(r.reason)}" for r in upload.rejected]
    saved = {r.saved_as for r in upload.saved}
    if not saved:
        flash(kb.name, "warning", text(lang, "index_failed_some", n=len(rejected)), rejected)
        return
    report = run_indexing(lang, text(lang, "indexing", kb=kb.name), kb.sync)
    if report is not None:
        remember_report(kb.name, report, lang, only=saved, rejected=rejected)


# -- sidebar -------------------------------------------------------------------------------
def _create_kb(settings: Settings, lang: str) -> None:
    name = (ss.get("new_kb_name") or "").strip()
    if not name:
        return
    try:
        KnowledgeBase.create(name, settings, **_inject(settings)).close()
    except KbqaError as exc:
        st.toast(text(lang, "error", msg=exc), icon=":material/error:")
        return
    ss["kb"] = name
    ss["new_kb_name"] = ""
    st.toast(text(lang, "created", name=name), icon=":material/check_circle:")


def _remove_file(kb: KnowledgeBase, file: str, lang: str) -> None:
    try:
        with busy(lang):
            kb.remove(file)
    except KbqaError as exc:
        flash(kb.name, "error", str(exc))
        return
    ss.get("file_status", {}).get(kb.name, {}).pop(file, None)
    st.toast(text(lang, "removed", file=file), icon=":material/delete:")


def sidebar_kb_picker(settings: Settings, lang: str) -> str | None:
    names = KnowledgeBase.list_names(settings)
    if ss.get("kb") not in names:
        ss["kb"] = settings.default_kb if settings.default_kb in names else (names[0] if names else None)
    if names:
        st.selectbox(text(lang, "kb"), names, key="kb", help=text(lang, "kb_help"))
    with st.expander(text(lang, "new_kb"), icon=":material/add:", expanded=not names):
        st.text_input(text(lang, "new_kb_name"), key="new_kb_name", placeholder=text(lang, "new_kb_placeholder"))
        st.button(text(lang, "create"), key="create_kb", on_click=_create_kb, args=(settings, lang),
                  type="primary" if not names else "secondary")
    return ss.get("kb")


def sidebar_documents(kb: KnowledgeBase, settings: Settings, lang: str) -> None:
    st.subheader(text(lang, "add_docs"), divider="gray")
    key = f"uploader_{ss.setdefault('uploader_n', 0)}"
    files = st.file_uploader(
        text(lang, "upload_label"), accept_multiple_files=True, key=key,
        help=text(lang, "upload_help", files=settings.ui.max_upload_files, mb=settings.ui.max_upload_mb),
        max_upload_size=max(1, int(settings.ui.max_upload_mb)),
    )
    if files and st.button(text(lang, "index_n", n=len(files)), type="primary", icon=":material/upload:",
                           width="stretch", key="index_uploads"):
        upload_and_index(kb, files, settings, lang)
        ss["uploader_n"] += 1  # a fresh, empty uploader
        st.rerun()

    note = ss.get("flash", {}).get(kb.name)
    if note:
        getattr(st, note["kind"])(note["text"] + "".join(f"\n- {d}" for d in note["details"]))

    records = sorted(kb.files(), key=lambda r: r["file"].casefold())
    st.subheader(f"{text(lang, 'documents')} · {len(records)}", divider="gray")
    if not records:
        st.caption(text(lang, "no_documents"))
    statuses = ss.get("file_status", {}).get(kb.name, {})
    box = st.container(height=min(62 * len(records) + 10, 420), border=False) if records else st.container()
    with box:
        for rec in records:
            status = "failed" if rec["status"] == "failed" else (
                "unchanged" if statuses.get(rec["file"]) == "unchanged" else "indexed")
            icon = _STATUS_ICON[status]
            left, right = st.columns([0.86, 0.14], vertical_alignment="center")
            detail = md_escape(rec["reason"]) if status == "failed" else chunks_text(lang, rec["chunks"])
            left.markdown(f"{icon} **{md_escape(rec['file'])}**  \n"
                          f":gray[{text(lang, 'status_' + status)} · {detail}]")
            right.button("", icon=":material/delete:", key=f"del_{rec['file']}", type="tertiary",
                         help=text(lang, "delete_help", file=rec["file"]),
                         on_click=_remove_file, args=(kb, rec["file"], lang))
    if st.button(text(lang, "rescan"), icon=":material/refresh:", key="rescan", type="tertiary",
                 help=text(lang, "rescan_help", path=kb.knowledge_dir)):
        report = run_indexing(lang, text(lang, "indexing", kb=kb.name), kb.sync)
        if report is not None:
            remember_report(kb.name, report, lang)
        st.rerun()


def sidebar_settings(kb: KnowledgeBase, settings: Settings, lang: str) -> tuple[int, float]:
    st.subheader(text(lang, "answer_settings"), divider="gray")
    k = st.slider(text(lang, "top_k"), 1, 20, settings.answer.max_sources, key="top_k",
                  help=text(lang, "top_k_help"))
    threshold = st.slider(text(lang, "threshold"), 0.0, 1.0, settings.answer.min_score, 0.05, key="min_score",
                          help=text(lang, "threshold_help"))
    with st.expander(text(lang, "about_index"), icon=":material/info:"):
        stats = kb.stats()
        emb = stats["embedding"]
        st.markdown(f"**{text(lang, 'embedding_model')}**  \n`{emb['model_id']}` · {emb['dimension']}-d")
        size = text(lang, "index_size_value", files=stats["files"], chunks=stats["chunks"],
                    size=_size(stats["index_bytes"]))
        st.markdown(f"**{text(lang, 'index_size')}**  \n{size}")
        st.markdown(f"**{text(lang, 'answered_by')}**  \n{llm_description(kb, lang)}")
    return k, threshold


def llm_description(kb: KnowledgeBase, lang: str) -> str:
    llm = kb.llm
    if llm is None:
        return text(lang, "llm_extractive")
    if llm.languages is None:
        return f"`{llm.name}`"
    langs = ", ".join(LANGUAGE_NAMES[lang].get(code, code) for code in sorted(llm.languages))
    return text(lang, "llm_languages", model=f"`{llm.name}`", langs=langs)


# -- chat ------------------------------------------------------------------------------------
@st.cache_data(max_entries=64, show_spinner=False)
def page_image(path: str, mtime: float, page: int, passage: str) -> bytes:
    return render_page_png(path, page, passage)


def render_sources(answer: Answer, settings: Settings, lang: str, msg_id: int) -> None:
    cited = set(answer.cited)
    ordered = sorted(answer.sources, key=lambda s: (s.n not in cited, s.n))
    st.markdown(f"**{text(lang, 'closest' if answer.refused else 'sources')}**")
    for s in ordered:
        where = f" · {text(lang, 'page', page=s.page)}" if s.page else ""
        label = f"[{s.n}] {md_escape(s.file)}{where} · {text(lang, 'score', score=s.score)}"
        # A key keeps each source's open/closed state across reruns (e.g. the page toggle inside it).
        with st.expander(label if s.n in cited or not cited else f":gray[{label}]", key=f"src_{msg_id}_{s.n}",
                         on_change="rerun"):
            if s.heading and not s.text.startswith(s.heading.rsplit(" > ", 1)[-1]):
                st.caption(md_escape(s.heading))
            st.markdown("> " + md_escape(s.text).replace("\n", "\n> "))
            if s.page and s.file.lower().endswith(".pdf"):
                render_page(s, settings, lang, f"pg_{msg_id}_{s.n}")


def render_page(s: Source, settings: Settings, lang: str, key: str) -> None:
    if not st.toggle(text(lang, "show_page"), key=key):
        return
    path = (settings.home / s.path).resolve()
    if not path.is_file() or not path.is_relative_to(settings.knowledge_dir.resolve()):
        st.caption(text(lang, "page_missing"))
        return
    try:
        png = page_image(str(path), path.stat().st_mtime, int(s.page or 1), s.text)
    except Exception as exc:  # a page that pdfium cannot render must not break the chat
        st.caption(text(lang, "error", msg=f"{type(exc).__name__}: {exc}"))
        return
    label = f"{s.file} — {text(lang, 'page', page=s.page)}"
    st.image(png, caption=label, alt=label, width=640)


def render_answer(answer: Answer, kb_name: str, settings: Settings, lang: str, msg_id: int) -> None:
    if answer.refused:
        st.markdown(f"**{text(lang, 'not_found')}**")
        st.caption(text(lang, "not_found_hint", kb=kb_name))
    else:
        st.markdown(answer_md(answer.text))
    mode = {"generative": text(lang, "mode_generative", model=answer.model or "LLM"),
            "extractive": text(lang, "mode_extractive"),
            "refused": text(lang, "mode_refused")}[answer.mode]
    seconds = answer.timings_ms.get("total", 0.0) / 1000
    st.caption(f"{mode} · {text(lang, 'seconds', s=seconds)}", help=answer.note or None)
    if answer.sources:
        render_sources(answer, settings, lang, msg_id)


def stream_answer(kb: KnowledgeBase, question: str, history: list[dict[str, str]], k: int, threshold: float,
                  lang: str) -> Answer:
    box = st.empty()
    box.markdown(f":gray[{text(lang, 'searching', kb=kb.name)}]")
    shown = ""
    final: Answer | None = None
    painted = 0.0
    with busy(lang):
        for piece in kb.ask_stream(question, history, k=k, min_score=threshold):
            if isinstance(piece, Answer):
                final = piece
                continue
            if isinstance(piece, Retrieved):  # shown until the model's first token arrives
                where = " · ".join(f"[{s.n}] {s.file}" + (f" p.{s.page}" if s.page else "") for s in piece.sources)
                box.markdown(f":gray[{md_escape(text(lang, 'reading', n=len(piece.sources), where=where))}]")
                continue
            shown += piece
            # Repaint at most ~6 times a second: every repaint costs the browser (and a CPU-bound
            # local LLM sharing the machine) far more than the token it shows.
            if (now := time.monotonic()) - painted > STREAM_REPAINT_S:
                box.markdown(answer_md(shown) + " ▌")
                painted = now
    box.empty()
    if final is None:
        raise KbqaError("the answer chain ended without an answer")
    return final


def chat_history(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The conversation for the answer chain: answered turns only (failed or cut-short turns left out)."""
    turns: list[dict[str, str]] = []
    for question, reply in zip(messages[::2], messages[1::2], strict=False):
        if question["role"] == "user" and reply["role"] == "assistant" and not reply.get("failed"):
            turns += [{"role": "user", "content": question["content"]},
                      {"role": "assistant", "content": reply["content"]}]
    return turns


def chat(kb: KnowledgeBase, settings: Settings, lang: str, k: int, threshold: float) -> None:
    messages: list[dict[str, Any]] = ss.setdefault("chats", {}).setdefault(kb.name, [])
    if messages and messages[-1]["role"] == "user":  # a rerun (another click) cut the last answer short
        messages.append({"role": "assistant", "content": text(lang, "interrupted"), "failed": True})
    welcome = st.empty()
    if not messages:
        n_files = len(kb.files())
        with welcome.container():
            st.markdown(f"#### {text(lang, 'welcome_title', kb=kb.name)}")
            st.caption(text(lang, "welcome_body", files=n_files) if n_files else text(lang, "welcome_empty"))
    for i, m in enumerate(messages):
        with st.chat_message(m["role"], avatar=AVATARS[m["role"]]):
            if m.get("answer") is not None:
                render_answer(m["answer"], kb.name, settings, lang, i)
            elif m.get("error"):
                st.error(m["content"])
            elif m.get("failed"):
                st.caption(m["content"])
            else:
                st.markdown(md_escape(m["content"]))
    question = st.chat_input(text(lang, "chat_placeholder", kb=kb.name))
    if not question:
        return
    history = chat_history(messages)
    welcome.empty()
    messages.append({"role": "user", "content": question})
    with st.chat_message("user", avatar=AVATARS["user"]):
        st.markdown(md_escape(question))
    with st.chat_message("assistant", avatar=AVATARS["assistant"]):
        try:
            answer = stream_answer(kb, question, history, k, threshold, lang)
        except KbqaError as exc:
            messages.append({"role": "assistant", "content": text(lang, "error", msg=exc), "error": True,
                             "failed": True})
            st.error(messages[-1]["content"])
            return
        messages.append({"role": "assistant", "content": answer.text, "answer": answer})
        render_answer(answer, kb.name, settings, lang, len(messages) - 1)


# -- page ------------------------------------------------------------------------------------
def main() -> None:
    try:
        settings = load_settings()
    except KbqaError as exc:
        st.error(str(exc))
        st.stop()
    if "lang" not in ss:
        ss["lang"] = ui_language(settings)
    lang = ss["lang"]
    st.set_page_config(page_title=text(lang, "page_title"), page_icon=":material/menu_book:", layout="wide",
                       initial_sidebar_state="expanded")
    exposure_guard(settings, lang)
    password_gate(settings, lang)

    with st.sidebar:
        st.markdown("### :material/menu_book: kbqa")
        st.segmented_control(text(lang, "language"), list(LANGUAGES), format_func=LANGUAGES.__getitem__,
                             key="lang", required=True, label_visibility="collapsed")
    st.markdown(f"## {text(lang, 'headline')}")
    st.caption(text(lang, "tagline"))
    try:
        with st.spinner(text(lang, "loading_models")):
            _inject(settings)
    except KbqaError as exc:
        st.error(text(lang, "error", msg=exc))
        st.stop()
    ensure_default_indexed(settings, lang)

    with st.sidebar:
        name = sidebar_kb_picker(settings, lang)
    if name is None:
        st.info(text(lang, "no_kb"), icon=":material/arrow_back:")
        return
    try:
        kb = kb_for(name, settings)
    except KbqaError as exc:
        st.error(text(lang, "error", msg=exc))
        return
    with st.sidebar:
        sidebar_documents(kb, settings, lang)
        k, threshold = sidebar_settings(kb, settings, lang)
        if st.button(text(lang, "clear_chat"), icon=":material/delete_sweep:", key="clear_chat", width="stretch"):
            ss.setdefault("chats", {})[name] = []
            st.rerun()
    chat(kb, settings, lang, k, threshold)

main()
