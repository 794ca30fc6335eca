"""Resuming a store file and locking it, with a scripted backend (no model).

What a resumed generation keeps (records it would write again as they are),
what it refuses or regenerates (records written for another prompt or
question), the store lock (a held lock names its holder, a stale one is taken
over), and OS errors while writing (named, earlier lines kept).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tinyllm_jax.data.example import Example
from tinyllm_jax.data.provenance import question_hash
from tinyllm_jax.data.store import read_store
from tinyllm_jax.teachers import store_lock as store_lock_module
from tinyllm_jax.teachers.backends import Generated
from tinyllm_jax.teachers.config import PromptSettings, TeacherError, base_config, run_spec, teacher
from tinyllm_jax.teachers.generate import generate_split
from tinyllm_jax.teachers.os_errors import os_error_line
from tinyllm_jax.teachers.prompts import PromptBuilder
from tinyllm_jax.teachers.store_lock import lock_path, store_lock

REPO = Path(__file__).resolve().parents[1]
GENERATION = {"max_new_tokens": 8, "backend": "fake"}


class ScriptedBackend:
    """Answers every prompt with the gold-looking first choice; counts calls."""

    name = "fake"
    kind = "causal"
    max_prompt_tokens = None

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def encode(self, texts, add_special_tokens):
        return [[ord(c) for c in t] for t in texts]

    def generate(self, batch):
        texts = ["".join(chr(i) for i in ids) for ids in batch]
        self.prompts += texts
        return [Generated(" It is so. Thus, the answer is (a).", 5, False) for _ in texts]


def examples(n: int = 6, **edits: dict) -> list[Example]:
    out = []
    for i in range(n):
        fields = {"id": f"e{i}", "question": f"What is item {i}?", "choices": (f"x{i}", f"y{i}"),
                  "answer": f"x{i}", **edits.get(f"e{i}", {})}
        out.append(Example(**fields))
    return out


def builder(demos: list[Example], instruction: str = "") -> PromptBuilder:
    return PromptBuilder(PromptSettings(k=1, demo_rationale="none"), demos, template="plain",
                         instruction=instruction)


def generate(path: Path, targets: list[Example], *, demos: list[Example] | None = None,
             instruction: str = "", policy: str = "refuse", engine: ScriptedBackend | None = None):
    engine = engine or ScriptedBackend()
    result = generate_split(
        teacher="t", split="train", examples=targets, builder=builder(demos or targets, instruction),
        backend=lambda: engine, out_path=path, model="m", generation=GENERATION, batch_size=2,
        add_special_tokens=False, progress=False, on_prompt_mismatch=policy,
    )
    return result, engine


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


# ---------------------------------------------------------------- what is written


def test_records_carry_the_question_hash_and_a_rerun_keeps_them(tmp_path):
    path = tmp_path / "train.jsonl"
    result, _ = generate(path, examples())
    assert result.written == 6
    for record, e in zip(sorted(lines(path), key=lambda r: r["id"]), examples()):
        assert record["question_hash"] == question_hash(e.question, e.choices, e.answer)
    again, engine = generate(path, examples())
    assert (again.written, again.already_done, again.replaced) == (0, 6, 0)
    assert engine.prompts == []


# ---------------------------------------------------------------- prompt hashes on resume


def test_changed_prompts_are_refused_by_default_naming_file_count_and_record(tmp_path):
    path = tmp_path / "train.jsonl"
    generate(path, examples()[:4])
    before = path.read_bytes()
    with pytest.raises(TeacherError) as err:
        generate(path, examples(), instruction="Explain carefully.")
    message = str(err.value)
    assert message.startswith(f"{path}, line 1: 4 of 4 records were written for other prompts")
    assert "prompt_hash" in message and "on_prompt_mismatch='regenerate'" in message
    assert path.read_bytes() == before  # nothing written, nothing lost


def test_an_edited_question_is_named_with_what_changed(tmp_path):
    path = tmp_path / "train.jsonl"
    generate(path, examples())
    changed = examples(e3={"question": "What is item three?"})
    with pytest.raises(TeacherError, match=r"1 of 6 records .*id 'e3': the question differs"):
        generate(path, changed, demos=examples())


def test_a_demonstration_edit_changes_the_prompts_that_show_it(tmp_path):
    path = tmp_path / "train.jsonl"
    targets = examples(4)
    demos = examples(4)
    generate(path, targets, demos=demos)
    edited_demos = [dataclasses.replace(d, question=d.question + " (edited)") for d in demos]
    with pytest.raises(TeacherError, match=r"records were written for other prompts .*"
                                           r"prompt_hash '[0-9a-f]+' recorded, '[0-9a-f]+' built"):
        generate(path, targets, demos=edited_demos)


def test_regenerate_sets_records_aside_and_writes_each_id_once(tmp_path):
    path = tmp_path / "train.jsonl"
    generate(path, examples())
    old = {r["id"]: r for r in lines(path)}
    result, engine = generate(path, examples(), instruction="Explain carefully.",
                              policy="regenerate")
    assert (result.replaced, result.written, result.already_done) == (6, 6, 0)
    assert "6 redone: written for other prompts" in result.format()
    assert all(p.startswith("Explain carefully.") for p in engine.prompts)
    new = lines(path)
    assert sorted(r["id"] for r in new) == sorted(old)
    assert all(r["prompt_hash"] != old[r["id"]]["prompt_hash"] for r in new)
    aside = lines(path.with_name("train.jsonl.replaced"))
    assert sorted(r["id"] for r in aside) == sorted(old)
    assert all(r["replaced_because"].startswith("prompt_hash") for r in aside)
    # And the new prompts are now the ones kept.
    again, _ = generate(path, examples(), instruction="Explain carefully.", policy="refuse")
    assert (again.written, again.already_done) == (0, 6)


def test_a_record_without_prompt_hash_cannot_be_kept(tmp_path):
    path = tmp_path / "train.jsonl"
    generate(path, examples(2))
    records = lines(path)
    records[1]["prompt_hash"] = None
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(TeacherError, match=r"line 2: 1 of 2 .*no prompt_hash recorded"):
        generate(path, examples(2))


def test_resuming_an_old_store_adds_the_question_hash_to_records_it_keeps(tmp_path):
    path = tmp_path / "train.jsonl"
    generate(path, examples(4))
    records = lines(path)
    for r in records:
        del r["question_hash"]  # as written before hashes were recorded
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    result, engine = generate(path, examples(4))
    assert (result.written, result.already_done, engine.prompts) == (0, 4, [])
    filled = lines(path)
    assert [{k: v for k, v in r.items() if k != "question_hash"} for r in filled] == records
    by_id = {e.id: e for e in examples(4)}
    assert all(r["question_hash"] == question_hash(by_id[r["id"]].question, by_id[r["id"]].choices,
                                                   by_id[r["id"]].answer) for r in filled)


def test_records_outside_this_runs_examples_are_left_alone(tmp_path):
    path = tmp_path / "train.jsonl"
    generate(path, examples(6))
    # A smaller max_examples with another instruction judges only its own ids.
    result, _ = generate(path, examples(6)[:2], demos=examples(6), instruction="New.",
                         policy="regenerate")
    assert result.replaced == 2
    assert len(read_store(path).records) == 6


def test_on_prompt_mismatch_is_validated_in_the_config():
    config = base_config()
    config.data = {"name": "synthetic"}
    config.teachers = {"t": teacher("some/model")}
    assert run_spec(config).on_prompt_mismatch == "refuse"
    config.on_prompt_mismatch = "regenerate"
    assert run_spec(config).on_prompt_mismatch == "regenerate"
    config.on_prompt_mismatch = "overwrite"
    with pytest.raises(TeacherError, match=r"config\.on_prompt_mismatch: expected one of "
                                           r"refuse, regenerate; got 'overwrite'"):
        run_spec(config)


# ---------------------------------------------------------------- the store lock


HOLDER = """
import sys, time
from tinyllm_jax.teachers.store_lock import store_lock
with store_lock(sys.argv[1]):
    print("holding", flush=True)
    time.sleep(60)
"""


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    path = tmp_path / "train.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "holding"
        with pytest.raises(TeacherError) as err:
            generate(path, examples())
        message = str(err.value)
        assert f"pid {proc.pid} on host {socket.gethostname()}" in message
        assert f"holds {lock_path(path)}" in message and "wait for it to finish" in message
        assert not path.exists()  # the second run wrote nothing
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    # Killed without releasing: the next run takes the lock over, with a warning.
    warnings: list[str] = []
    with store_lock(path, warn=warnings.append):
        assert json.loads(lock_path(path).read_text())["pid"] == os.getpid()
    assert len(warnings) == 1 and f"left by pid {proc.pid}" in warnings[0]
    assert lock_path(path).read_text() == ""  # released


def test_a_lock_held_in_this_process_also_blocks_generation(tmp_path):
    path = tmp_path / "train.jsonl"
    with store_lock(path), pytest.raises(TeacherError, match=rf"pid {os.getpid()} on host"):
        generate(path, examples())


def test_stale_lock_with_unreadable_content_is_taken_over(tmp_path, capsys):
    path = tmp_path / "train.jsonl"
    lock_path(path).write_text("garbage")
    result, _ = generate(path, examples(2))
    assert result.written == 2
    err = capsys.readouterr().err
    assert f"warning: {lock_path(path)}: taking over the lock left by a run that wrote " in err
    assert lock_path(path).read_text() == ""


def test_lock_path_that_is_not_a_file_is_refused(tmp_path):
    path = tmp_path / "train.jsonl"
    lock_path(path).symlink_to("/dev/null")
    with pytest.raises(TeacherError, match=r"train\.jsonl\.lock: is a character device where the "
                                           r"lock file of .* belongs; remove it"):
        generate(path, examples())


def test_without_flock_a_live_holder_blocks_and_a_dead_one_is_taken_over(tmp_path, monkeypatch):
    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(store_lock_module.fcntl, "flock", no_flock)
    path = tmp_path / "train.jsonl"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        holder = {"host": socket.gethostname(), "pid": sleeper.pid, "started": "t", "command": "c"}
        lock_path(path).write_text(json.dumps(holder))
        with pytest.raises(TeacherError, match=rf"pid {sleeper.pid} on host"), store_lock(path):
            pass
    finally:
        sleeper.kill()
        sleeper.wait()
    warnings: list[str] = []
    with store_lock(path, warn=warnings.append):
        pass
    assert f"left by pid {sleeper.pid}" in warnings[0]
    other = {"host": "elsewhere", "pid": 1, "started": "t", "command": "c"}
    lock_path(path).write_text(json.dumps(other))
    with pytest.raises(TeacherError, match=r"cannot be checked from here; if that run is gone, "
                                           r"delete .*train\.jsonl\.lock"), store_lock(path):
        pass


# ---------------------------------------------------------------- OS errors while writing


def test_full_disk_mid_generation_names_the_file_and_keeps_earlier_lines(tmp_path, monkeypatch):
    path = tmp_path / "train.jsonl"
    generate(path, examples(4), demos=examples(8))
    before = path.read_bytes()
    real_pwrite = os.pwrite

    def full(fd, data, offset):
        if os.fstat(fd).st_ino == path.stat().st_ino:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(OSError) as err:
        generate(path, examples(8), demos=examples(8))
    assert err.value.filename == str(path)
    line = os_error_line(err.value)
    assert line == (f"{path}: no space left on device; free space on that file system (or write "
                    "elsewhere) and rerun; everything written so far is kept")
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert lock_path(path).read_text() == ""  # released on the way out
    result, _ = generate(path, examples(8), demos=examples(8))
    assert (result.written, result.already_done) == (4, 4)


def test_os_error_lines_name_the_path_and_what_to_do(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError) as err:
        (blocker / "sub").mkdir(parents=True)
    assert os_error_line(err.value).startswith(f"{blocker}/sub: not a directory; {blocker} is a "
                                               "file, not a directory")
    with pytest.raises(OSError) as err:
        (tmp_path / ("n" * 300)).mkdir()
    assert "file name too long; a name in this path is longer" in os_error_line(err.value)
    assert os_error_line(OSError(errno.EIO, "I/O error")) == (
        "I/O error; an input/output error: check the device and rerun")
