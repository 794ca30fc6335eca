"""Checks on a run's working directory, made before any data is read or
anything compiled, so a bad --workdir costs seconds instead of a training
start-up (or Orbax's five-minute wait on a checkpoints/ it cannot create).

    path = prepare_output_dir(workdir, dirs=TRAIN_DIRS, files=TRAIN_FILES)  # training
    path = check_existing_dir(workdir, files=("predictions_test.jsonl",))   # --mode=eval
    path = check_output_file(json_path, "--json")                           # one output file

A directory passes when it is a directory (created if allowed), every name
in its path fits the file system, a file can be created, written, synced and
removed there, the subdirectories the run writes are directories or absent,
and the files it writes are regular files or absent.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterable
from pathlib import Path

# What a training run writes into its workdir.
TRAIN_DIRS = ("checkpoints", "checkpoints_damaged", "tb", "wandb", "profile", "compilation_cache")
TRAIN_FILES = ("config.json", "metrics.jsonl", "summary.json", "training.png", "wandb_run_id")
# Room left below PATH_MAX for what goes under the workdir (Orbax's
# `<step>.orbax-checkpoint-tmp-<n>/state/ocdbt.process_0/d/<hash>` paths).
_PATH_HEADROOM = 256


class WorkdirError(ValueError):
    """The directory cannot be used (ValueError: the entry points print it as
    `error: ...` and exit 2)."""


def _nearest_existing(path: Path) -> Path:
    for parent in (path, *path.parents):
        if os.path.lexists(parent):
            return parent
    return Path("/")


def check_path_lengths(path: Path, flag: str) -> None:
    """Every name in `path` within NAME_MAX, and the path leaves room under PATH_MAX."""
    anchor = _nearest_existing(path)
    try:
        name_max = os.pathconf(anchor if anchor.is_dir() else anchor.parent, "PC_NAME_MAX")
        path_max = os.pathconf(anchor if anchor.is_dir() else anchor.parent, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    for part in path.parts:
        size = len(os.fsencode(part))
        if size > name_max:
            raise WorkdirError(
                f"{flag} {path}: the name {part[:40]!r}... is {size} bytes, longer than the "
                f"{name_max} bytes the file system allows for one name; use a shorter name")
    size = len(os.fsencode(str(path)))
    if size + _PATH_HEADROOM > path_max:
        raise WorkdirError(
            f"{flag} {path}: the path is {size} bytes; with the files written under it, it "
            f"would pass the {path_max}-byte limit of the file system; use a shorter path")


def _check_not_under_file(path: Path, flag: str) -> None:
    anchor = _nearest_existing(path)
    if anchor != path and not anchor.is_dir():
        raise WorkdirError(
            f"{flag} {path}: {anchor} is {_kind(anchor)}, not a directory, so nothing can be "
            "created under it; fix the path or move that file aside")


def _kind(path: Path) -> str:
    if path.is_symlink() and not path.exists():
        return f"a broken symbolic link (to {os.readlink(path)})"
    if path.is_dir():
        return "a directory"
    if path.is_file():
        return "a regular file"
    if path.is_char_device():
        return "a character device"
    if path.is_block_device():
        return "a block device"
    if path.is_fifo():
        return "a named pipe"
    if path.is_socket():
        return "a socket"
    return "not a regular file"


def probe_writable(directory: Path, flag: str) -> None:
    """Create, write, sync and remove a file: shows a read-only or full file
    system (or missing permissions) now rather than at the first save."""
    probe = directory / f".write-probe.{socket.gethostname()}.{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"probe\n" * 64)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        with contextlib.suppress(OSError):
            probe.unlink()
        reason = e.strerror or str(e)
        raise WorkdirError(
            f"{flag} {directory}: cannot write there ({reason}); use a writable directory "
            "with free space") from e
    probe.unlink()


def check_entries(directory: Path, dirs: Iterable[str], files: Iterable[str], flag: str,
                  writes: bool = True) -> None:
    """Subdirectories the run creates are directories or absent (and, when
    the run `writes` into them, writable); files it writes are regular files
    (or links to one) or absent."""
    for name in dirs:
        p = directory / name
        if os.path.lexists(p) and not p.is_dir():
            raise WorkdirError(
                f"{flag} {directory}: {p} is {_kind(p)}, but the run keeps a directory there; "
                "move it aside (or use another workdir)")
        if p.is_dir() and writes:
            # E.g. a link to a directory the run cannot write: Orbax would
            # wait five minutes for a step directory it cannot create.
            probe_writable(p, flag)
    for name in files:
        p = directory / name
        if os.path.lexists(p) and not p.is_file():
            raise WorkdirError(
                f"{flag} {directory}: {p} is {_kind(p)}, but the run writes a regular file "
                "there; move it aside (or use another workdir)")


def prepare_output_dir(directory: str | os.PathLike, *, dirs: Iterable[str] = (),
                       files: Iterable[str] = (), flag: str = "--workdir") -> Path:
    """Create `directory` if needed and check it as the module docstring says."""
    path = Path(directory).absolute()
    check_path_lengths(path, flag)
    _check_not_under_file(path, flag)
    if os.path.lexists(path) and not path.is_dir():
        raise WorkdirError(f"{flag} {path} is {_kind(path)}, not a directory; pass a directory "
                           "(a new one is created)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WorkdirError(f"{flag} {path}: cannot create it ({e.strerror or e}); use a "
                           "writable location") from e
    probe_writable(path, flag)
    check_entries(path, dirs, files, flag)
    return path


def check_existing_dir(directory: str | os.PathLike, *, dirs: Iterable[str] = (),
                       files: Iterable[str] = (), flag: str = "--workdir",
                       needs: str = "checkpoints") -> Path:
    """Like prepare_output_dir for a directory that must already exist (and
    hold `needs`); creates nothing, so a mistyped path stays absent."""
    path = Path(directory).absolute()
    check_path_lengths(path, flag)
    if not os.path.lexists(path):
        raise WorkdirError(f"{flag} {path} does not exist (nothing was created); check the "
                           "path: it must be the workdir of a training run")
    if not path.is_dir():
        raise WorkdirError(f"{flag} {path} is {_kind(path)}, not a directory; pass the workdir "
                           "of a training run")
    if needs and not (path / needs).is_dir():
        what = _kind(path / needs) if os.path.lexists(path / needs) else "missing"
        raise WorkdirError(f"{flag} {path} is not a training workdir: {path / needs} is "
                           f"{what}; pass the --workdir that training wrote")
    check_entries(path, dirs, files, flag, writes=False)
    probe_writable(path, flag)
    return path


def check_output_file(path: str | os.PathLike, flag: str) -> Path:
    """A file the command will write: its directory exists and takes a new
    file, and the name is not a directory. Nothing is created."""
    target = Path(path).absolute()
    check_path_lengths(target, flag)
    parent = target.parent
    if not parent.is_dir():
        what = _kind(parent) if os.path.lexists(parent) else "missing"
        raise WorkdirError(f"{flag} {target}: its directory {parent} is {what}; create the "
                           "directory first or fix the path")
    if os.path.lexists(target) and not target.is_file():
        raise WorkdirError(f"{flag} {target} is {_kind(target)}; give the path of a file to "
                           "write")
    probe_writable(parent, flag)
    return target
