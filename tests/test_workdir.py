"""Workdir checks (tinyllm_jax/workdir.py) and the error boundary's OS-error
line (tinyllm_jax/cli.py): every refusal names the path and what to do, and
a refused directory is left as it was."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.faults import harness
from tinyllm_jax import cli
from tinyllm_jax.workdir import (
    TRAIN_DIRS,
    TRAIN_FILES,
    WorkdirError,
    check_existing_dir,
    check_output_file,
    prepare_output_dir,
)


def _prepare(path: Path) -> Path:
    return prepare_output_dir(path, dirs=TRAIN_DIRS, files=TRAIN_FILES)


def test_a_new_workdir_is_created_and_left_clean(tmp_path: Path) -> None:
    wd = _prepare(tmp_path / "a" / "b")
    assert wd.is_dir() and list(wd.iterdir()) == []  # the write probe is gone


@pytest.mark.parametrize("layout, target, message", [
    ({"file": "wd"}, "wd", "is a regular file, not a directory"),
    ({"file": "f"}, "f/wd", "f is a regular file, not a directory, so nothing can be created"),
    ({"file": "wd/checkpoints"}, "wd", "checkpoints is a regular file, but the run keeps a "
                                       "directory there"),
    ({"file": "wd/tb"}, "wd", "tb is a regular file"),
    ({"dir": "wd/metrics.jsonl"}, "wd", "metrics.jsonl is a directory, but the run writes a "
                                        "regular file there"),
    ({"link": ["wd/metrics.jsonl", "/dev/full"]}, "wd", "metrics.jsonl is a character device"),
    ({"link": ["wd/summary.json", "/dev/full"]}, "wd", "summary.json is a character device"),
    ({"link": ["wd/tb", "/nonexistent/tb"]}, "wd", "tb is a broken symbolic link"),
    ({"link": ["wd/checkpoints", "/proc/1"]}, "wd", "checkpoints: cannot write there"),
    ({}, "x" * 300, "is 300 bytes, longer than the 255 bytes"),
    ({}, "/".join(["y" * 200] * 20), "would pass the 4096-byte limit"),
])
def test_unusable_workdirs_are_refused_naming_the_path(
    tmp_path: Path, layout: dict, target: str, message: str
) -> None:
    for kind, value in layout.items():
        p = tmp_path / (value[0] if isinstance(value, list) else value)
        p.parent.mkdir(parents=True, exist_ok=True)
        if kind == "file":
            p.touch()
        elif kind == "dir":
            p.mkdir()
        else:
            p.symlink_to(value[1])
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(WorkdirError, match="--workdir") as info:
        _prepare(tmp_path / target)
    assert message in str(info.value)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("where", ["/proc/1/wd", "/sys/wd", "/dev/full/wd"])
def test_workdirs_that_cannot_be_created_are_refused(where: str) -> None:
    with pytest.raises(WorkdirError, match=f"--workdir {where}"):
        _prepare(Path(where))


def test_existing_dir_check_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "tyop"
    with pytest.raises(WorkdirError, match="does not exist \\(nothing was created\\)"):
        check_existing_dir(missing)
    assert not missing.exists()
    (tmp_path / "wd").mkdir()
    with pytest.raises(WorkdirError, match=r"is not a training workdir: .*checkpoints is missing"):
        check_existing_dir(tmp_path / "wd")
    (tmp_path / "wd" / "checkpoints").mkdir()
    (tmp_path / "wd" / "predictions_test.jsonl").mkdir()
    with pytest.raises(WorkdirError, match=r"predictions_test\.jsonl is a directory"):
        check_existing_dir(tmp_path / "wd", files=("predictions_test.jsonl",))
    (tmp_path / "wd" / "predictions_test.jsonl").rmdir()
    assert check_existing_dir(tmp_path / "wd", files=("predictions_test.jsonl",)).is_dir()


def test_output_file_check(tmp_path: Path) -> None:
    (tmp_path / "f").touch()
    (tmp_path / "d").mkdir()
    for target, message in [("missing/out.json", r"missing/out\.json: its directory .* is missing"),
                            ("f/out.json", r"its directory .*f is a regular file"),
                            ("d", r"d is a directory; give the path of a file")]:
        with pytest.raises(WorkdirError, match=message):
            check_output_file(tmp_path / target, "--json")
    assert check_output_file(tmp_path / "out.json", "--json") == tmp_path / "out.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "f"]


@pytest.mark.parametrize("code, hint", [
    (errno.ENOSPC, "free some space"), (errno.EROFS, "read-only"),
    (errno.ENAMETOOLONG, "shorter path"), (errno.ENOTDIR, "is a file, not a directory"),
    (errno.EISDIR, "a directory stands where a file is expected"), (errno.EIO, "check the disk"),
])
def test_os_errors_become_one_line_naming_the_path(code: int, hint: str) -> None:
    text = cli.error_text(OSError(code, os.strerror(code), "/data/run/metrics.jsonl"))
    assert text.startswith(f"/data/run/metrics.jsonl: {os.strerror(code)} ({errno.errorcode[code]})")
    assert hint in text and "\n" not in text


def test_error_boundary_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info, cli.error_boundary():
        raise OSError(errno.ENOSPC, "No space left on device", "/x/summary.json")
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        "error: /x/summary.json: No space left on device (ENOSPC); the file system is full: "
        "free some space or use a path on another disk\n")
    with pytest.raises(SystemExit) as info, cli.error_boundary(on_interrupt="stopped"):
        raise KeyboardInterrupt
    assert info.value.code == 130 and capsys.readouterr().err == "interrupted: stopped\n"

    class CustomError(RuntimeError):
        pass

    with pytest.raises(SystemExit), cli.error_boundary(CustomError):
        raise CustomError("bad")
    assert capsys.readouterr().err == "error: CustomError: bad\n"
    with pytest.raises(ZeroDivisionError), cli.error_boundary():  # a bug keeps its traceback
        raise ZeroDivisionError


def test_eval_on_a_mistyped_workdir_creates_nothing(tmp_path: Path) -> None:
    """Through the command line: exit 2, one line, and no directory appears."""
    runs = tmp_path / "runs"
    runs.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "tinyllm_jax.main", "--config=configs/tiny.py", "--mode=eval",
         f"--workdir={runs / 'tyop'}"], cwd=harness.REPO, env=harness.subprocess_env(),
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: WorkdirError: --workdir {runs / 'tyop'} does not exist (nothing was created); "
        "check the path: it must be the workdir of a training run")
    assert "Traceback" not in proc.stderr
    assert list(runs.iterdir()) == []
