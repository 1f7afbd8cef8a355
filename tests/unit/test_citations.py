"""Holding an answer's sentences to the sources: support_check (model cited) and attribute (it did not)."""

from __future__ import annotations

import pytest

from kbqa.citations import attribute, cite, cjk_numeral_value, numbers_in, sentences, support_check
from kbqa.model_text import clean_markers as _clean_markers
from kbqa.schema import Source
from kbqa.tokenize import Tokenizer

TOK = Tokenizer()
EN = [
    Source(n=1, file="manual.pdf", path="manual.pdf", page=3, heading=None, score=1.0,
           text="Dissolve one sachet of citric-acid descaler in 500 ml of water. "
                "The programme takes about 25 minutes."),
    Source(n=2, file="manual.pdf", path="manual.pdf", page=4, heading=None, score=0.9,
           text="Error E04 means the water tank is empty or not seated."),
]
ZH = [Source(n=1, file="说明书.txt", path="说明书.txt", page=None, heading=None, score=1.0,
             text="每制作三百杯咖啡需要除垢：将一袋柠檬酸除垢剂溶于五百毫升水中，整个程序约需二十五分钟。"
             "保修期为自购买之日起两年。")]


@pytest.mark.parametrize(("run", "value"), [("五百", 500), ("二十五", 25), ("一千四百五十", 1450), ("十五", 15),
                                            ("两", 2), ("一万二千", 12000), ("零", 0)])
def test_chinese_numerals_read_as_numbers(run: str, value: int) -> None:
    assert cjk_numeral_value(run) == value


def test_numbers_only_read_chinese_numerals_when_asked() -> None:
    assert numbers_in("溶于五百毫升水中", cjk=True) == {"500"}
    assert numbers_in("溶于五百毫升水中") == set() and numbers_in("500 ml, 1,450 W") == {"500", "1450"}


def test_a_wrong_figure_is_dropped_even_when_cited() -> None:
    check = support_check("Use 50 ml of water [1]. The programme takes about 25 minutes [1].", EN, TOK)
    assert check.text == "The programme takes about 25 minutes [1]." and check.dropped == 1


def test_a_sentence_cited_by_the_wrong_source_is_recited() -> None:
    check = support_check("Error E04 means the water tank is empty or not seated [1].", EN, TOK)
    assert check.text == "Error E04 means the water tank is empty or not seated [2]." and check.recited == 1


def test_a_figure_in_digits_is_backed_by_the_same_figure_in_chinese_numerals() -> None:
    assert attribute("除垢需要500毫升水。", ZH, TOK) == "除垢需要500毫升水[1]。"
    assert attribute("除垢需要50毫升水。", ZH, TOK) == ""  # 五百 is 500, not 50


def test_a_terse_chinese_answer_is_attributed() -> None:
    assert sentences("两年") == ["两年"]
    assert attribute("两年", ZH, TOK) == "两年[1]"


def test_attribute_drops_echoed_questions_and_made_up_sentences() -> None:
    text = "How long does it take? It takes about 25 minutes. The machine was designed in Milan."
    assert attribute(text, EN, TOK) == "It takes about 25 minutes [1]."


@pytest.mark.parametrize(("raw", "clean"), [
    ("保修期为两年。[1]", "保修期为两年[1]。"),
    ("It clicks. [1]", "It clicks [1]."),
    ("A is 5. [1] B is 6. [2]", "A is 5 [1]. B is 6 [2]."),
    ("See e.g. [2] below", "See e.g. [2] below"),
    ("Done [1].", "Done [1]."),
    ("Refill it [7].", "Refill it."),
])
def test_markers_after_the_full_stop_move_before_it(raw: str, clean: str) -> None:
    assert _clean_markers(raw, {1, 2}) == clean


def test_code_is_never_split_and_a_block_stays_with_its_sentence() -> None:
    text = ("Use `\\color{red!75}` for a tint. For example:\n```latex\n\\toprule\nA & B \\\\\n```\n"
            "Done. It mixes red!75 with white.")
    assert sentences(text) == ["Use `\\color{red!75}` for a tint.",
                               "For example:\n```latex\n\\toprule\nA & B \\\\\n```",
                               "Done.", "It mixes red!75 with white."]
    # The marker goes before the block, never after its closing fence (that would break the fence).
    assert cite("For example:\n```latex\n\\toprule\n```", 2) == "For example [2]:\n```latex\n\\toprule\n```"


def test_what_the_question_states_is_not_invented() -> None:
    """"50 rows" is the user's; a figure the answer adds must still be in the source."""
    rows = [Source(n=1, file="xcolor.pdf", path="xcolor.pdf", page=40, heading=None, score=1.0,
                   text="The command \\rowcolors{start}{odd}{even} colours alternate table rows.")]
    question = "I have a table with 50 rows; how do I colour every other row?"
    answer = "For the 50 rows, use the \\rowcolors command."
    assert attribute(answer, rows, TOK, question) == "For the 50 rows, use the \\rowcolors command [1]."
    assert attribute(answer, rows, TOK) == ""  # without the question, 50 is a number no source states
    assert attribute("For the 60 rows, use the \\rowcolors command.", rows, TOK, question) == ""
    # Restating the question adds nothing a source backs: dropped.
    assert attribute("To colour every other row of a table with 50 rows.", rows, TOK, question) == ""
