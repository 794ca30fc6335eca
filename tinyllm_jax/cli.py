"""What every command-line entry point shares: the error boundary.

    with error_boundary(NonFiniteError):
        ...the command...

User-caused conditions (a bad config, a missing or unreadable input, a path
that is a file where a directory belongs, a full disk, a checkpoint of
another run) end as ONE line `error: ...` and exit status 2; Ctrl-C ends as
one line and status 130 (the shell's convention for SIGINT, so `cmd && next`
does not go on). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import errno
import re
import sys
from collections.abc import Iterator
from typing import Any, NoReturn

from absl import flags

from tinyllm_jax.config_help import override_help

# ValueError covers ConfigError, DataError, CheckpointMismatchError and the
# other input checks; OSError covers FileNotFoundError and every file-system
# fault (ENOSPC, EROFS, ENOTDIR, ENAMETOOLONG, ...).
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

# What a person can do about each file-system condition.
_OS_HINTS: dict[int, str] = {
    errno.ENOSPC: "the file system is full: free some space or use a path on another disk",
    errno.EDQUOT: "the disk quota is exhausted: free some space or use a path on another disk",
    errno.EROFS: "the file system is read-only: use a writable location",
    errno.EACCES: "permission denied: fix the permissions or use another location",
    errno.EPERM: "the operation is not permitted there: use another location",
    errno.ENAMETOOLONG: "a name in the path is longer than the file system allows: use a "
                        "shorter path",
    errno.ENOTDIR: "a part of the path is a file, not a directory: fix the path or move "
                   "that file aside",
    errno.EISDIR: "a directory stands where a file is expected: move it aside or fix the path",
    errno.EEXIST: "something is in the way: move it aside or choose another path",
    errno.ENOENT: "it does not exist: check the path",
    errno.ELOOP: "the path has a symbolic-link loop: fix the link",
    errno.EIO: "the device reported an input/output error: check the disk",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n)",
    errno.ENFILE: "too many open files on the system: raise the limit",
    errno.ENXIO: "no such device: check the path",
    errno.ETXTBSY: "the file is busy: stop the program using it",
    errno.EFBIG: "a file grew past the size limit (ulimit -f) or the file system's maximum: "
                 "raise the limit or write elsewhere",
}
# TensorStore (Orbax's array writer) reports OS errors as ValueErrors ending
# in this, e.g. "... No space left on device [os_error_code='28']".
_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")


def fail(message: str) -> NoReturn:
    """Print `error: message` to stderr and exit with status 2."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(EXIT_USER_ERROR)


def error_text(error: BaseException) -> str:
    """`Type: message` for an exception, with what to do for OS errors."""
    if isinstance(error, OSError) and error.errno is not None:
        return os_error_text(error)
    text = f"{type(error).__name__}: {error}"
    code = _OS_ERROR_CODE.search(text)
    if code and int(code.group(1)) in _OS_HINTS:
        text += f"; {_OS_HINTS[int(code.group(1))]}"
    return text


def os_error_text(error: OSError) -> str:
    """`<path>: <what the OS said> (<ERRNO>); <what to do>`, one line."""
    code = errno.errorcode.get(error.errno or 0, str(error.errno))
    reason = error.strerror or str(error)
    paths = " -> ".join(str(p) for p in (error.filename, error.filename2) if p is not None)
    where = f"{paths}: " if paths else ""
    hint = _OS_HINTS.get(error.errno or 0, "check the path and the file system")
    return f"{where}{reason} ({code}); {hint}"


def interrupted(message: str) -> NoReturn:
    """One line on stderr for a Ctrl-C, and the shell's status 130."""
    print(f"interrupted: {message}", file=sys.stderr, flush=True)
    sys.exit(EXIT_INTERRUPTED)


@contextlib.contextmanager
def error_boundary(*extra: type[BaseException],
                   on_interrupt: str = "stopped by Ctrl-C; nothing was left half-written",
                   ) -> Iterator[None]:
    """Turn user-caused errors (USER_ERRORS and `extra`) into `error: ...`,
    exit 2, and KeyboardInterrupt into one line, exit 130."""
    try:
        yield
    except KeyboardInterrupt:
        interrupted(on_interrupt)
    except (*USER_ERRORS, *extra) as e:
        fail(error_text(e))


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing (app.run's `flags_parser`), with mistakes reported
    as one line and exit 2.

    ml_collections raises AttributeError/TypeError with a traceback for
    `--config.train.lr=...` when no such field exists or the type is wrong.
    """
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        message = str(e)
        if "Traceback (most recent call last)" in message:
            # ml_collections embeds get_config's traceback; its last line says what is wrong.
            message = message.split("Traceback")[0].strip() + " " + message.strip().splitlines()[-1]
    except (AttributeError, KeyError, TypeError, ValueError, SyntaxError, OSError) as e:
        message = f"{type(e).__name__}: {e}"
    bad = [a for a in argv[1:] if a.startswith("--config")]
    print(f"error: could not apply the command-line flags {bad}: {message}\n"
          f"Config fields are locked (a mistyped one is an error):\n{override_help(argv)}",
          file=sys.stderr, flush=True)
    sys.exit(EXIT_USER_ERROR)


def config_value(holder: Any, example: str) -> Any:
    """The ConfigDict of a `config_flags.DEFINE_config_file` flag; a missing
    flag or a file that cannot be loaded is `error: --config: ...`, exit 2.

    ml_collections loads the file on first use and re-raises its error then."""
    try:
        cfg = holder.value
    except (OSError, SyntaxError) as e:
        fail(f"--config: {str(e).strip().splitlines()[-1]}")
    if cfg is None:
        fail(f"--config is required, e.g. --config={example}")
    return cfg
