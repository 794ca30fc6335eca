"""Teacher prompts: demo selection, teacher forcing, chat templates, config checks."""

from __future__ import annotations

import pytest

from tinyllm_jax.data.example import Example
from tinyllm_jax.data.synthetic import SyntheticConfig, generate_split
from tinyllm_jax.teachers.config import (
    PromptSettings,
    TeacherError,
    base_config,
    run_spec,
    teacher,
    teacher_spec,
)
from tinyllm_jax.teachers.prompts import (
    RATIONALE_LEAD,
    PromptBuilder,
    choose_demos,
    prompt_hash,
)

CFG = SyntheticConfig(train_size=60, valid_size=20, test_size=5, seed=3)


@pytest.fixture(scope="module")
def splits() -> dict[str, list[Example]]:
    return {s: generate_split(s, CFG)[0] for s in ("train", "valid")}


def query_block(text: str) -> str:
    """The target's own block: everything after the last demonstration."""
    return text.rsplit("\n\nQuestion:\n", 1)[-1]


def test_demos_come_from_the_train_split_never_the_target(splits):
    train, valid = splits["train"], splits["valid"]
    train_ids = {e.id for e in train}
    builder = PromptBuilder(PromptSettings(k=3, seed=7), train)
    for target in train + valid:
        prompt = builder.build(target)
        assert len(prompt.demo_ids) == 3
        assert len(set(prompt.demo_ids)) == 3
        assert set(prompt.demo_ids) <= train_ids
        assert target.id not in prompt.demo_ids
        demos = {e.id: e for e in train}
        for demo_id in prompt.demo_ids:
            # The demo is really in the prompt text, question and solved answer.
            assert demos[demo_id].question in prompt.text
        assert prompt.text.count(target.question) == 1


def test_demos_are_reproducible_from_the_seed_and_vary_with_it(splits):
    train = splits["train"]
    a = PromptBuilder(PromptSettings(seed=1), train)
    b = PromptBuilder(PromptSettings(seed=1), list(train))
    c = PromptBuilder(PromptSettings(seed=2), train)
    first = [a.build(e) for e in train]
    # Independent of build order (a resumed run builds a different subset).
    again = [b.build(e) for e in reversed(train)][::-1]
    assert [p.text for p in first] == [p.text for p in again]
    assert [p.hash for p in first] == [prompt_hash(p.text) for p in again]
    other = [c.build(e).demo_ids for e in train]
    assert sum(x.demo_ids != y for x, y in zip(first, other)) > len(train) // 2


def test_demos_skip_a_copy_of_the_target_under_another_id(splits):
    target = splits["train"][0]
    twin = Example("twin", target.question, target.choices, target.answer, {"algebra": "x"})
    other = splits["train"][1]
    chosen = choose_demos(target, [twin, target, other], k=2, seed=0)
    assert [e.id for e in chosen] == [other.id]
    assert choose_demos(target, [target], k=2, seed=0) == []


def test_gold_answer_only_with_teacher_forcing(splits):
    train = splits["train"]
    forced = PromptBuilder(PromptSettings(teacher_forcing=True), train)
    plain = PromptBuilder(PromptSettings(teacher_forcing=False), train)
    for target in splits["valid"]:
        gold = f"({'abcd'[target.answer_index]}) {target.answer}"
        with_answer = query_block(forced.build(target).text)
        without = query_block(plain.build(target).text)
        assert f"Answer:\n{gold}\nRationale:\n{RATIONALE_LEAD}" in with_answer
        assert "Answer:" not in without
        assert without.endswith(f"Rationale:\n{RATIONALE_LEAD}")
        assert target.question in without


def test_demo_rationales_shown_once_with_a_single_answer_statement(splits):
    train = splits["train"]
    builder = PromptBuilder(PromptSettings(k=2, demo_rationale="algebra"), train)
    prompt = builder.build(splits["valid"][0])
    demos = {e.id: e for e in train}
    for demo_id in prompt.demo_ids:
        demo = demos[demo_id]
        # The programmatic rationale ends "The answer is N."; the demo keeps
        # its steps and states the answer once, in the parseable form.
        steps = demo.rationales["algebra"].rsplit(" The answer is", 1)[0]
        assert steps in prompt.text
    assert prompt.text.count("Thus, the answer is") == 2
    assert "The answer is" not in prompt.text
    none = PromptBuilder(PromptSettings(k=2, demo_rationale="none"), train).build(train[5])
    assert "Let's think step by step." in none.text
    assert none.text.count(RATIONALE_LEAD) == 1  # only the target's


def test_chat_template_is_used_when_the_tokenizer_has_one(splits):
    pytest.importorskip("transformers")
    from tinyllm_jax.teachers.tiny import train_tokenizer

    tok = train_tokenizer(["Question: a b c Options: Answer: Rationale:"], vocab_size=300)
    tok.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    train = splits["train"]
    builder = PromptBuilder(
        PromptSettings(k=2), train, template="chat", tokenizer=tok, system_prompt="Be brief."
    )
    target = splits["valid"][0]
    text = builder.build(target).text
    assert text.startswith("<|system|>Be brief.\n<|user|>")
    assert text.count("<|user|>") == 3 and text.count("<|assistant|>") == 3
    assert text.endswith(f"<|assistant|>{RATIONALE_LEAD}")
    # The gold answer is in the last user turn (teacher forcing is on).
    last_user = text.rsplit("<|user|>", 1)[1]
    assert f"Answer:\n({'abcd'[target.answer_index]}) {target.answer}" in last_user
    with pytest.raises(TeacherError, match="no chat template"):
        PromptBuilder(PromptSettings(), train, template="chat", tokenizer=object())


def test_config_errors_name_the_field():
    cfg = base_config()
    cfg.data = {"name": "toy"}
    cfg.teachers = {"t5": teacher("some/model")}
    assert run_spec(cfg).teachers[0].generation["max_new_tokens"] == 128
    cfg.teachers.t5.kind = "encoder"
    with pytest.raises(TeacherError, match=r"config\.teachers\.t5\.kind: expected one of"):
        run_spec(cfg)
    with pytest.raises(TeacherError, match=r"config\.teachers\.x\.generation: unknown key"):
        teacher_spec("x", {"model": "m", "generation": {"max_tokens": 3}})
    with pytest.raises(TeacherError, match=r"config\.teachers\.x\.batch_size: expected an integer"):
        teacher_spec("x", {"model": "m", "batch_size": 0})
    with pytest.raises(TeacherError, match=r"config\.teachers\.tiny-t5: a teacher name"):
        teacher_spec("tiny-t5", {"model": "m"})
    with pytest.raises(TeacherError, match=r"config\.prompt\.k: expected an integer >= 0"):
        run_spec({"out_dir": "o", "data": {"name": "toy"}, "teachers": {"t": {"model": "m"}},
                  "prompt": {"k": -1}})


def test_demos_never_show_a_rationale_that_reached_another_answer(splits):
    train = splits["train"]
    wrong = [e for e in train if e.teacher_answers["algebra"] not in (None, e.answer)]
    assert wrong, "the synthetic teachers err sometimes (error_rates)"
    builder = PromptBuilder(PromptSettings(k=2, demo_rationale="algebra"), train)
    assert not {e.id for e in wrong} & {e.id for e in builder.pool}
    for target in splits["valid"]:
        for demo_id in builder.build(target).demo_ids:
            demo = next(e for e in train if e.id == demo_id)
            assert demo.teacher_answers["algebra"] == demo.answer
