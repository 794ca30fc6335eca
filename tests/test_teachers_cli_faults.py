"""The teacher and importer commands under file-system faults: one line
`error: <path>: <what>; <what to do>`, exit status 2, no traceback, and
nothing written before lost. We run as root, so faults are made of files in
the way, devices, over-long names and /sys, never of permissions."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tinyllm_jax.data.store import store_path

REPO = Path(__file__).resolve().parents[1]
INPUTS = REPO / "tests" / "data" / "bad" / "provenance"
TEACHER_CONFIG = INPUTS / "teacher_config.py"


def run(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", *argv], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def teachers(out: Path) -> subprocess.CompletedProcess:
    return run("tinyllm_jax.teachers", f"--config={TEACHER_CONFIG}:{out}")


def importer(root: Path, out: Path, *flags: str) -> subprocess.CompletedProcess:
    return run("tinyllm_jax.teachers.importer", "--root", str(root), "--datasets", "obqa",
               "--splits", "train", "--out", str(out), *flags)


def assert_one_line_error(done: subprocess.CompletedProcess, fragment: str) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr
    assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def root(tmp_path) -> Path:
    shutil.copytree(INPUTS / "tiny_root", tmp_path / "root")
    return tmp_path / "root"


# ---------------------------------------------------------------- teacher generation


def test_teacher_out_dir_that_is_a_file(tmp_path):
    out = tmp_path / "out"
    out.write_text("not a directory")
    line = assert_one_line_error(teachers(out), f"{out}/synthetic/tiny: not a directory;")
    assert f"{out} is a file, not a directory: choose another path" in line
    assert out.read_text() == "not a directory"


def test_teacher_out_dir_under_a_file(tmp_path):
    (tmp_path / "plain").write_text("x")
    assert_one_line_error(teachers(tmp_path / "plain" / "runs"),
                          f"not a directory; {tmp_path}/plain is a file")


def test_teacher_out_dir_name_too_long(tmp_path):
    line = assert_one_line_error(teachers(tmp_path / ("r" * 300)), "file name too long;")
    assert "choose a shorter path" in line


def test_teacher_out_dir_on_a_file_system_that_refuses_it():
    # /sys: read-only or not permitted even for root.
    line = assert_one_line_error(teachers(Path("/sys/tinyllm_rationales")), "/sys/tinyllm")
    assert "; " in line.split(": ", 2)[2]


@pytest.mark.parametrize("fault,what", [("dir", "is a directory"),
                                        ("/dev/full", "is a character device")])
def test_teacher_store_file_that_is_not_a_file(tmp_path, fault, what):
    path = store_path(tmp_path / "out", "synthetic", "tiny", "train")
    path.parent.mkdir(parents=True)
    path.mkdir() if fault == "dir" else path.symlink_to(fault)
    line = assert_one_line_error(teachers(tmp_path / "out"), f"{path}: {what}, not a regular file")
    assert "move it away or choose another out_dir" in line


def test_teacher_lock_file_that_is_a_directory(tmp_path):
    path = store_path(tmp_path / "out", "synthetic", "tiny", "train")
    (path.parent / "train.jsonl.lock").mkdir(parents=True)
    assert_one_line_error(teachers(tmp_path / "out"), "train.jsonl.lock: is a directory")


# ---------------------------------------------------------------- importer


def test_import_then_join_reads_back_with_question_hashes(root, tmp_path):
    from tinyllm_jax.data.tinyllm import read_split

    done = importer(root, tmp_path / "out")
    assert done.returncode == 0, done.stderr
    record = json.loads(store_path(tmp_path / "out", "obqa", "flan", "train").read_text()
                        .splitlines()[0])
    assert set(record["question_hash"]) == {"question", "choices", "answer"}
    _, report = read_split(root, "obqa", "train", ("flan",), store_dir=tmp_path / "out")
    assert "flan/question_hash_absent" not in report.counts
    # The question file edited afterwards: the imported store no longer fits.
    qfile = root / "obqa" / "obqa_train.json"
    qfile.write_text(qfile.read_text().replace("Which is wet?", "Which is damp?"))
    with pytest.raises(ValueError, match=r"flan/train\.jsonl, line 2, field 'question_hash'"):
        read_split(root, "obqa", "train", ("flan",), store_dir=tmp_path / "out")


def test_import_out_that_is_a_file(root, tmp_path):
    out = tmp_path / "out"
    out.write_text("keep me")
    assert_one_line_error(importer(root, out), f"{out}: file exists; it exists and is not a dir")
    assert out.read_text() == "keep me"


def test_import_out_name_too_long(root, tmp_path):
    assert_one_line_error(importer(root, tmp_path / ("o" * 260)), "file name too long")


@pytest.mark.parametrize("overwrite", [(), ("--overwrite",)])
def test_import_store_file_that_is_a_directory(root, tmp_path, overwrite):
    # Before: "exists, kept" and exit 0 without --overwrite, a traceback with it.
    path = store_path(tmp_path / "out", "obqa", "flan", "train")
    path.mkdir(parents=True)
    assert_one_line_error(importer(root, tmp_path / "out", *overwrite),
                          f"{path}: is a directory, not a regular file")


def test_import_full_disk_keeps_the_files_already_imported(root, tmp_path):
    out = tmp_path / "out"
    assert importer(root, out).returncode == 0
    flan = store_path(out, "obqa", "flan", "train")
    before = flan.read_bytes()
    llama = store_path(out, "obqa", "llama", "train")
    llama.unlink()
    llama.symlink_to("/dev/full")
    assert_one_line_error(importer(root, out, "--overwrite"),
                          f"{llama}: is a character device, not a regular file")
    assert flan.read_bytes() == before and llama.is_symlink()
    assert not list(flan.parent.glob(".*.tmp")) and not list(llama.parent.glob(".*.tmp"))


@pytest.mark.parametrize("flag", ["--datasets", "--splits", "--teachers"])
def test_import_with_an_empty_list_is_an_error_not_a_silent_success(root, tmp_path, flag):
    argv = {"--datasets": "obqa", "--splits": "train", "--teachers": "flan", flag: ","}
    done = run("tinyllm_jax.teachers.importer", "--root", str(root), "--out", str(tmp_path / "o"),
               *[x for kv in argv.items() for x in kv])
    assert_one_line_error(done, f"{flag}: names nothing")
    assert not (tmp_path / "o").exists()


def test_import_where_the_dataset_directory_is_a_file(root, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "obqa").write_text("x")
    assert_one_line_error(importer(root, tmp_path / "out"), f"{tmp_path}/out/obqa is a file")
