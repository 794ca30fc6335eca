"""Parsing generated teacher text into a rationale and a stated answer."""

from __future__ import annotations

import pytest

from tinyllm_jax.teachers.parsing import parse_output

SUN = (
    "puppies learning new tricks",
    "children growing up and getting old",
    "flowers wilting in a vase",
    "plants sprouting, blooming and wilting",
)


def test_flan_style_rationale_then_answer():
    p = parse_output(
        " Sun is responsible for plants sprouting. Thus, the answer is (d) plants sprouting, "
        "blooming and wilting",
        SUN,
    )
    assert p.rationale == "Sun is responsible for plants sprouting."
    assert p.teacher_answer == SUN[3] and p.answer_letter == "d"
    assert p.error is None and p.notes == ()


def test_runaway_new_question_block_is_cut():
    # A published LLaMA output: the prompt's opening repeated, then a new item.
    text = (
        " Let's think step by step.\nMount Rushmore is a mountain.\nSo, the mountains seem "
        "very close.\n#\n# 17.\nQuestion:\nWhat is"
    )
    p = parse_output(text, SUN)
    assert p.rationale == "Mount Rushmore is a mountain.\nSo, the mountains seem very close."
    assert "runaway_cut" in p.notes and "no_answer_stated" in p.notes
    assert p.teacher_answer is None and p.error is None
    q = parse_output("Plants need light. Thus, the answer is (d).\n\nQuestion: Why is", SUN)
    assert q.rationale == "Plants need light." and q.teacher_answer == SUN[3]


def test_echo_of_the_prompt_is_stripped():
    prompt = "Question:\nThe sun is responsible for\nOptions:\n(a) x\nRationale:\nLet's think step by step."
    p = parse_output(prompt + " Sunlight feeds plants. So the answer is (d)", SUN, echoes=(prompt,))
    assert p.rationale == "Sunlight feeds plants."
    assert "echo_stripped" in p.notes and p.teacher_answer == SUN[3]


@pytest.mark.parametrize(
    ("text", "answer", "rationale"),
    [
        ("The answer is (b). Kids age over time.", SUN[1], "Kids age over time."),
        ("Flowers die. The correct answer is c) flowers wilting in a vase.", SUN[2], "Flowers die."),
        ("It grows. Therefore, the answer is plants sprouting, blooming and wilting.", SUN[3], "It grows."),
        ("Step 1: sun. Answer: d", SUN[3], "Step 1: sun."),
    ],
)
def test_answer_forms(text, answer, rationale):
    p = parse_output(text, SUN)
    assert (p.teacher_answer, p.rationale, p.error) == (answer, rationale, None)


def test_numeric_choices_match_whole_numbers_only():
    p = parse_output("3 * 4 = 12. The answer is 12.", ("1", "12", "21"))
    assert p.teacher_answer == "12"
    p = parse_output("7 + 6 = 13. The answer is 13.", ("1", "12", "21"))
    assert p.teacher_answer is None and "answer_not_a_choice" in p.notes


def test_answer_changes_and_out_of_range_letters_are_noted():
    p = parse_output("Maybe the answer is (a). No wait, the answer is (c).", SUN)
    assert p.teacher_answer == SUN[2] and "answer_changed" in p.notes
    p = parse_output("Because. The answer is (z).", SUN)
    assert p.teacher_answer is None and p.answer_letter == "z"
    assert "answer_out_of_range" in p.notes


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "empty_output"),
        ("   \n", "empty_output"),
        ("Question:\nWhat is next?", "no_rationale_after_cleanup"),
        ("Let's think step by step.", "no_rationale_after_cleanup"),
        ("Thus, the answer is (a)", "no_rationale_after_cleanup"),
    ],
)
def test_unparseable_outputs_get_a_reason(text, error):
    p = parse_output(text, SUN)
    assert p.rationale is None and p.error == error
