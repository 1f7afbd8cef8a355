"""Short texts cut with a sub-dictionary (kbqa/jieba_query.py) give exactly jieba's words."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

from kbqa.jieba_query import QueryJieba, ensure_dictionary
from kbqa.tokenize import SHORT_CJK_CHARS, Tokenizer

TEXTS = [
    "除垢需要多长时间？", "中华人民共和国", "极光X2的保修期是多久", "我来到北京清华大学", "他来到了网易杭研大厦",
    "小明硕士毕业于中国科学院计算所，后在日本京都大学深造", "结婚的和尚未结婚的", "工信处女干事每月经过下属科室",
    "如何重置路由器的管理员密码", "南京市长江大桥", "研究生命起源", "发票应在收到后三十日内付款", "一", "",
    "轴承多久加一次润滑脂？", "没休完的年假可以留到明年吗", "孕妇可以吃这个药吗", "䶮㐀龥鿿豈",  # rare/edge code points
]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def full():  # type: ignore[no-untyped-def]
    import jieba

    jieba.setLogLevel(logging.WARNING)
    tok = jieba.Tokenizer()
    tok.initialize()
    return tok


def _random_texts(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    common = "".join(TEXTS) + "".join(chr(c) for c in range(0x4E00, 0x4E00 + 400))  # frequent and rare
    return ["".join(rng.choice(common) for _ in range(rng.randint(1, 30))) for _ in range(n)]


def test_cuts_exactly_like_the_whole_dictionary(root: Path, full) -> None:  # type: ignore[no-untyped-def]
    light = QueryJieba(root)
    for text in [*TEXTS, *_random_texts(400)]:
        assert light.cut_for_search(text) == list(full.cut_for_search(text)), text
    light.close()


def test_dictionary_copy_is_made_once(root: Path) -> None:
    folder = ensure_dictionary(root)
    stamp = (folder / "meta.json").stat().st_mtime_ns
    assert ensure_dictionary(root) == folder and (folder / "meta.json").stat().st_mtime_ns == stamp
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")]


def test_tokenizer_terms_are_the_same_with_and_without_the_short_path(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KBQA_MODELS_DIR", str(root))
    short, whole = Tokenizer(), Tokenizer()
    whole.warm_up()
    long_text = "设备每运行两百小时需要加注润滑脂" * 20
    assert len(long_text) > SHORT_CJK_CHARS
    for text in [*TEXTS, "Pump P-17 需要两升水 before start", "Valve V3 opens clockwise", long_text]:
        assert short.terms(text) == whole.terms(text), text
        assert short.query_terms(text) == whole.query_terms(text), text
    assert short._jieba is not None  # the long text loaded the whole dictionary; short texts did not need it


def test_an_unusable_cache_falls_back_to_the_whole_dictionary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder", "utf-8")
    monkeypatch.setenv("KBQA_MODELS_DIR", str(blocker / "models"))
    tok = Tokenizer()
    assert tok.query_terms("除垢需要多长时间") == ["除垢", "需要", "多长", "时间", "长时间", "多长时间"]
    assert tok._jieba is not None and "loading the whole dictionary" in caplog.text
