"""The in-context example generator (config.prompt.generate_demos) with tiny local teachers."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")

from tests.test_teachers_generate import (  # noqa: F401  (fixtures)
    DATASET,
    data_root,
    models,
    read_lines,
    settings,
    write_config,
)
from tinyllm_jax.configs import load_config_file
from tinyllm_jax.data.store import read_store
from tinyllm_jax.teachers.config import TeacherError, run_spec
from tinyllm_jax.teachers.runner import run


def _spec(models, data_root, out, tmp_path, *, generate=True, **overrides):  # noqa: F811
    path = write_config(tmp_path / "cfg.py", **settings(models, data_root, out, splits=["valid"],
                                                        max_examples=4, **overrides))
    cfg = load_config_file(path)
    cfg.prompt.generate_demos = generate
    return run_spec(cfg), cfg


def test_each_teacher_writes_its_demos_then_uses_them(models, data_root, tmp_path):  # noqa: F811
    out = tmp_path / "store"
    spec, cfg = _spec(models, data_root, out, tmp_path)
    messages: list[str] = []
    results = run(spec, cfg.data, echo=messages.append)
    assert [r.teacher for r in results] == ["tiny_llama", "tiny_t5"]
    for teacher in ("tiny_llama", "tiny_t5"):
        demos = read_lines(out / DATASET / teacher / "demos.jsonl")
        # k + 1 = 3 train questions, zero-shot and teacher-forced, with provenance
        assert len(demos) == 3 and all("-train-" in d["id"] for d in demos)
        for d in demos:
            assert d["demo_ids"] == [] and d["model"] == models[teacher]
            assert d["generation"]["pass"] == "demos" and d["generation"]["k"] == 0
            assert d["generation"]["teacher_forcing"] is True
            assert len(d["prompt_hash"]) == 16 and d["question_hash"]
        main = read_lines(out / DATASET / teacher / "valid.jsonl")
        assert len(main) == 4
        demo_ids = {d["id"] for d in demos}
        assert all(set(r["demo_ids"]) <= demo_ids for r in main)
        assert all(r["generation"]["generate_demos"] is True for r in main)
        assert all(r["generation"]["demo_rationale"] == teacher for r in main)
    assert any("demos" in m for m in messages)

    # The main prompts show the teacher's own demo rationales: replace
    # tiny_t5's (random-model text) by known text, as if a good teacher had
    # written them, and the dry run shows them in every prompt.
    path = out / DATASET / "tiny_t5" / "demos.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    for i, rec in enumerate(lines):
        rec.update(rationale=f"Own reasoning number {i}.", teacher_answer=None, error=None)
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    shown: list[str] = []
    run(spec, cfg.data, dry_run=2, echo=shown.append)
    t5_main = [p for p, h in zip(shown[1::2], shown[0::2])
               if "tiny_t5" in h and "split valid" in h]
    assert len(t5_main) == 2
    assert all("Own reasoning number" in p for p in t5_main)


def test_a_dry_run_before_the_demo_pass_writes_nothing(models, data_root, tmp_path):  # noqa: F811
    out = tmp_path / "store"
    spec, cfg = _spec(models, data_root, out, tmp_path)
    shown: list[str] = []
    run(spec, cfg.data, dry_run=1, echo=shown.append)
    heads = [x for x in shown if x.startswith("=====")]
    assert len(heads) == 6 and all("split demos" in h for h in heads)  # 3 demos x 2 teachers
    assert sum("not written yet" in x for x in shown) == 2
    assert not out.exists()


def test_the_demo_pass_resumes_and_refuses_other_settings(models, data_root, tmp_path):  # noqa: F811
    out = tmp_path / "store"
    spec, cfg = _spec(models, data_root, out, tmp_path)
    run(spec, cfg.data, echo=lambda _: None)
    path = out / DATASET / "tiny_t5" / "demos.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + lines[1][:25])  # a crash mid-write: one whole, one torn
    messages: list[str] = []
    run(spec, cfg.data, echo=messages.append)
    again = {r.id: r.data for r in read_store(path).records}
    assert sorted(again) == sorted(json.loads(x)["id"] for x in lines)
    # Greedy decoding and the same prompts: the redone demos are the same
    # lines, so the main pass's prompts (and records) still match.
    assert {json.dumps(v, sort_keys=True) for v in again.values()} == {
        json.dumps(json.loads(x), sort_keys=True) for x in lines}
    # one whole line kept, the torn one and the lost one written again
    assert any(m.startswith("tiny_t5/demos: 2 written, 1 already done, of 3") for m in messages)
    before = len(messages)
    run(spec, cfg.data, echo=messages.append)
    assert not any("loading teacher" in m for m in messages[before:])
    changed, cfg2 = _spec(models, data_root, out, tmp_path, max_new_tokens=5)
    with pytest.raises(TeacherError, match=r"demos\.jsonl, line 1: written by model"):
        run(changed, cfg2.data, echo=lambda _: None)


def test_the_switch_is_validated(models, data_root, tmp_path):  # noqa: F811
    path = write_config(tmp_path / "cfg.py", **settings(models, data_root, tmp_path / "s"))
    cfg = load_config_file(path)
    with cfg.ignore_type():
        cfg.prompt.generate_demos = "yes"
    with pytest.raises(TeacherError, match="generate_demos: expected True or False"):
        run_spec(cfg)
    assert load_config_file(path).prompt.generate_demos is False
