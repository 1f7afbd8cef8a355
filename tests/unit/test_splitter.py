from __future__ import annotations

from kbqa.config import SplitterSettings
from kbqa.schema import Section
from kbqa.splitter import ChineseRecursiveSplitter, chunk_id

ZH = (
    "本设备的额定电压为二百二十伏特，最大功率为一千五百瓦。使用前请仔细阅读说明书！"
    "如果出现故障，请立即切断电源并联系售后服务。设备应放置在通风干燥的地方；避免阳光直射，远离热源。"
) * 4


def _splitter(size: int = 60, overlap: int = 10) -> ChineseRecursiveSplitter:
    return ChineseRecursiveSplitter(SplitterSettings(chunk_size=size, chunk_overlap=overlap))


def test_chinese_splits_at_sentence_marks_and_offsets_are_exact() -> None:
    chunks = _splitter().split([Section(ZH, 3, "第一章 > 安全")], "a.txt", "knowledge/kb/a.txt")
    assert len(chunks) > 3
    for c in chunks:
        assert len(c.text) <= 60
        assert ZH[c.start : c.start + len(c.text)] == c.text
        assert c.page == 3 and c.heading == "第一章 > 安全" and c.file == "a.txt"
        assert c.text[-1] in "。！？；，" or c is chunks[-1]


def test_english_and_mixed_keep_words_whole() -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 10
    for c in _splitter(80, 10).split([Section(text)], "b.md", "b.md"):
        assert not c.text.startswith(("uick", "rown")), c.text
        assert c.page is None


def test_ids_are_stable_content_hashes() -> None:
    a = _splitter().split([Section(ZH, 1)], "a.txt", "p")
    b = _splitter().split([Section(ZH, 1)], "a.txt", "p")
    assert [c.id for c in a] == [c.id for c in b]
    assert len({c.id for c in a}) == len(a)
    hex_id, int_id = chunk_id("a.txt", 1, 0, "x")
    assert len(hex_id) == 32 and 0 <= int_id < 2**63
    assert chunk_id("a.txt", 2, 0, "x") != chunk_id("a.txt", 1, 0, "x")


def test_huge_single_line_is_split_quickly() -> None:
    text = "x" * 2_000_000
    chunks = _splitter(400, 50).split([Section(text)], "big.txt", "big.txt")
    assert all(len(c.text) <= 400 for c in chunks)
    assert sum(len(c.text) for c in chunks) >= len(text)


def test_blank_sections_give_no_chunks() -> None:
    assert _splitter().split([Section("   \n\n  ")], "e.txt", "e.txt") == []
