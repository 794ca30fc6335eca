"""Damaged checkpoints: the newest intact one is used with a warning naming
the damaged one; with none intact, a clear error and not a byte changed.

The damage kinds are run on small states in-process (fast); two cases run
the real training entry point on a copy of the reference workdir.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.faults import harness
from tinyllm_jax.checkpoint import (
    DAMAGED_DIR,
    CheckpointCorruptError,
    Checkpointer,
    CheckpointMismatchError,
    step_problems,
)

META = {"model": {"d_model": 4}, "teachers": ["a"], "tokenizer": "byte", "dataset": "x",
        "tokenizer_vocab_size": 259}


# 16 KiB of random (incompressible) values: OCDBT stores it in a data file
# of its own instead of inline in its index, so truncating that file really
# loses array bytes, as it would for model weights.
W_SHAPE = (64, 64)


def _state(step: int) -> dict[str, jax.Array]:
    return {"w": jax.random.normal(jax.random.PRNGKey(step), W_SHAPE),
            "b": jnp.arange(3.0) + step}


def _abstract(w_shape: tuple[int, ...] = W_SHAPE) -> dict[str, jax.ShapeDtypeStruct]:
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return {"w": jax.ShapeDtypeStruct(w_shape, jnp.float32, sharding=sharding),
            "b": jax.ShapeDtypeStruct((3,), jnp.float32, sharding=sharding)}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """Steps 1, 2, 3 saved the way training saves them."""
    ckpt = Checkpointer(tmp_path, keep=5, keep_best=False, async_save=False)
    for step in (1, 2, 3):
        ckpt.save(step, _state(step), {"position": step}, META)
    ckpt.wait()
    ckpt.close()
    return tmp_path


def _truncate_array_file(step_dir: Path) -> None:
    """Cut the biggest array data file (under an OCDBT `d/` directory) in half."""
    data = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    path = max(data, key=lambda p: p.stat().st_size)
    os.truncate(path, path.stat().st_size // 2)


def _remove(rel: str) -> Callable[[Path], None]:
    def damage(step_dir: Path) -> None:
        path = step_dir / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return damage


def _overwrite(rel: str, data: bytes) -> Callable[[Path], None]:
    return lambda step_dir: (step_dir / rel).write_bytes(data)


DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated array file": _truncate_array_file,
    "truncated array index": lambda d: os.truncate(d / "state" / "manifest.ocdbt", 10),
    "missing item meta": _remove("meta"),
    "missing item state": _remove("state"),
    "deleted checkpoint metadata": _remove("_CHECKPOINT_METADATA"),
    "deleted state tree metadata": _remove("state/_METADATA"),
    "deleted data metadata": _remove("data/metadata"),
    "torn data json": _overwrite("data/metadata", b'{"posit'),
    "emptied step directory": lambda d: [_remove(p.name)(d) for p in list(d.iterdir())],
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_newest_damaged_falls_back_with_a_warning(workdir: Path, kind: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    step3 = workdir / "checkpoints" / "3"
    DAMAGE[kind](step3)
    before = harness.tree_of(step3)
    ckpt = Checkpointer(workdir, keep=5, keep_best=False, async_save=False)
    with caplog.at_level(logging.WARNING, logger="tinyllm_jax.checkpoint"):
        restored = ckpt.restore_intact(_abstract(), expected_meta=META)
    ckpt.close()
    assert restored is not None and restored.step == 2
    np.testing.assert_array_equal(restored.state["w"], _state(2)["w"])
    assert restored.data == {"position": 2}
    assert [s for s, _ in restored.damaged] == [3]
    assert f"{step3} is damaged" in caplog.text
    assert harness.tree_of(step3) == before, "a read-only restore changed the damaged step"


def test_training_restore_moves_damaged_newer_steps_aside_and_can_save_again(
    workdir: Path,
) -> None:
    _truncate_array_file(workdir / "checkpoints" / "3")
    damaged = harness.tree_of(workdir / "checkpoints" / "3")
    ckpt = Checkpointer(workdir, keep=5, keep_best=False, async_save=False)
    restored = ckpt.restore_intact(_abstract(), expected_meta=META, move_damaged=True)
    assert restored is not None and restored.step == 2
    moved = workdir / DAMAGED_DIR / "3"
    assert harness.tree_of(moved) == damaged, "the damaged step must be kept, byte for byte"
    assert ckpt.all_steps() == [1, 2]
    # The resumed run writes step 3 again.
    assert ckpt.save(3, _state(30), {"position": 30}, META, force=True)
    ckpt.wait()
    again = ckpt.restore_intact(_abstract(), expected_meta=META)
    ckpt.close()
    assert again is not None and again.step == 3 and again.data == {"position": 30}


def test_no_intact_checkpoint_is_a_clear_error_and_nothing_changes(workdir: Path) -> None:
    for step, kind in zip((1, 2, 3), ("missing item meta", "truncated array file",
                                      "deleted state tree metadata")):
        DAMAGE[kind](workdir / "checkpoints" / str(step))
    before = harness.tree_of(workdir)
    ckpt = Checkpointer(workdir, keep=5, keep_best=False, async_save=False)
    with pytest.raises(CheckpointCorruptError) as err:
        ckpt.restore_intact(_abstract(), expected_meta=META, move_damaged=True)
    ckpt.close()
    message = str(err.value)
    for step in (1, 2, 3):
        assert str(workdir / "checkpoints" / str(step)) in message
    assert "item 'meta' is missing" in message and "cannot read it back" in message
    assert "Nothing was changed or deleted" in message
    assert harness.tree_of(workdir) == before
    assert not (workdir / DAMAGED_DIR).exists()


def test_damaged_best_step_falls_back_to_newest_intact(workdir: Path) -> None:
    _remove("meta")(workdir / "checkpoints" / "1")
    ckpt = Checkpointer(workdir, keep=5, keep_best=False, async_save=False)
    restored = ckpt.restore_intact(_abstract(), expected_meta=META, prefer=1)
    ckpt.close()
    assert restored is not None and restored.step == 3


def test_other_configuration_is_refused_not_skipped(workdir: Path) -> None:
    """A mismatch stops the search: falling back to an older step of the same
    foreign run would be a silent partial restore."""
    before = harness.tree_of(workdir)
    ckpt = Checkpointer(workdir, keep=5, keep_best=False, async_save=False)
    with pytest.raises(CheckpointMismatchError, match=r"state w: checkpoint shape \(64, 64\), "
                                                      r"config shape \(65, 64\)"):
        ckpt.restore_intact(_abstract((65, 64)), expected_meta=META)
    other = {**META, "teachers": ["a", "b"]}
    with pytest.raises(CheckpointMismatchError, match=r"teachers: checkpoint has \['a'\]"):
        ckpt.restore_intact(_abstract(), expected_meta=other)
    ckpt.close()
    assert harness.tree_of(workdir) == before


def test_step_problems_is_empty_for_intact_steps(workdir: Path) -> None:
    for step in (1, 2, 3):
        assert step_problems(workdir / "checkpoints" / str(step)) == []


# --- through the training entry point ------------------------------------------------


def test_training_resumes_before_a_damaged_checkpoint_and_matches_reference(
    reference: Path, compile_cache: Path, tmp_path: Path
) -> None:
    workdir = tmp_path / "wd"
    shutil.copytree(reference, workdir)
    newest = workdir / "checkpoints" / "24"
    _truncate_array_file(newest)
    damaged = harness.tree_of(newest)
    run = harness.launch(workdir, tmp_path / "run.log", harness.train_args(workdir),
                         harness.subprocess_env(compile_cache))
    assert run.wait(timeout=300) == 0, run.tail()
    log = run.log()
    assert f"{newest} is damaged and is skipped: cannot read it back" in log
    assert run.resumed_step() == 20
    assert harness.tree_of(workdir / DAMAGED_DIR / "24") == damaged
    assert harness.state_differences(reference / "checkpoints" / "24", newest) == []


def test_training_with_no_intact_checkpoint_exits_2_and_touches_nothing(
    reference: Path, compile_cache: Path, tmp_path: Path
) -> None:
    workdir = tmp_path / "wd"
    shutil.copytree(reference, workdir)
    _remove("meta")(workdir / "checkpoints" / "20")
    _truncate_array_file(workdir / "checkpoints" / "24")
    before = harness.tree_of(workdir)
    run = harness.launch(workdir, tmp_path / "run.log", harness.train_args(workdir),
                         harness.subprocess_env(compile_cache))
    assert run.wait(timeout=300) == 2, run.tail()
    log = run.log()
    assert "error: CheckpointCorruptError: no intact checkpoint in" in log
    assert "Traceback" not in log
    for step in (20, 24):
        assert str(workdir / "checkpoints" / str(step)) in log
    assert harness.tree_of(workdir) == before


def test_unraisable_filter_drops_only_the_failed_restore_echoes() -> None:
    """Reports that repeat a failed restore are dropped; everything else reaches the
    previous hook."""
    import types

    from tinyllm_jax.orbax_echoes import drop_failed_read_echoes

    def coroutine_from(filename: str) -> types.CoroutineType:
        scope: dict = {}
        exec(compile("async def read():\n    pass\n", filename, "exec"), scope)
        return scope["read"]()

    passed: list = []

    def report(exc: BaseException, obj: object) -> None:
        drop_failed_read_echoes(types.SimpleNamespace(exc_value=exc, object=obj), passed.append)

    read_error = Exception("Encountered error while reading array index: (slice(0, 3, 1),).")
    orbax, ours = coroutine_from("/x/orbax/checkpoint/serialization.py"), coroutine_from("/x/mine.py")
    try:
        report(RuntimeError("Event loop is closed"), None)
        report(read_error, orbax)
        assert passed == []
        report(read_error, ours)  # not Orbax's read
        report(ValueError("something else"), orbax)  # Orbax, another error
        report(RuntimeError("Event loop is running"), None)
        assert len(passed) == 3
    finally:
        orbax.close()
        ours.close()


def test_asyncio_log_filter_drops_only_orbax_read_errors_inside_the_context() -> None:
    """A failed gather of reads logs "exception was never retrieved" on the
    asyncio logger; inside the filters' context those records go, every other
    asyncio record stays, and outside it nothing is dropped."""
    from tinyllm_jax.orbax_echoes import orbax_read_echo_filters

    def raised_in(filename: str, exc: Exception) -> Exception:
        scope: dict = {"exc": exc}
        exec(compile("def read():\n    raise exc\n", filename, "exec"), scope)
        try:
            scope["read"]()
        except Exception as e:
            return e
        raise AssertionError("read() did not raise")

    message = "Encountered error while reading array index: (slice(0, 4, 1),)."
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    asyncio_log = logging.getLogger("asyncio")
    handler = Keep()
    asyncio_log.addHandler(handler)
    echo = raised_in("/x/orbax/checkpoint/serialization.py", Exception(message))
    try:
        with orbax_read_echo_filters():
            for exc in (echo, raised_in("/x/mine.py", Exception(message)),
                        raised_in("/x/orbax/checkpoint/serialization.py", ValueError("other"))):
                asyncio_log.error("_GatheringFuture exception was never retrieved",
                                  exc_info=(type(exc), exc, exc.__traceback__))
            asyncio_log.error("a plain asyncio error")
        asyncio_log.error("after the restore", exc_info=(type(echo), echo, echo.__traceback__))
    finally:
        asyncio_log.removeHandler(handler)
    kept = [(r.getMessage(), r.exc_info and str(r.exc_info[1])) for r in records]
    assert kept == [("_GatheringFuture exception was never retrieved", message),
                    ("_GatheringFuture exception was never retrieved", "other"),
                    ("a plain asyncio error", None),
                    ("after the restore", message)]


def test_filters_are_put_back_after_the_context_even_on_error() -> None:
    import sys

    from tinyllm_jax.orbax_echoes import orbax_read_echo_filters

    hook, filters = sys.unraisablehook, list(logging.getLogger("asyncio").filters)
    with pytest.raises(KeyError), orbax_read_echo_filters():
        assert sys.unraisablehook is not hook
        assert len(logging.getLogger("asyncio").filters) == len(filters) + 1
        raise KeyError("boom")
    assert sys.unraisablehook is hook
    assert logging.getLogger("asyncio").filters == filters


def test_importing_checkpoint_changes_no_process_wide_hook_or_logger() -> None:
    import subprocess
    import sys

    code = (
        "import logging, sys\n"
        "hook, filters = sys.unraisablehook, list(logging.getLogger('asyncio').filters)\n"
        "import tinyllm_jax.checkpoint\n"
        "assert sys.unraisablehook is hook, sys.unraisablehook\n"
        "assert logging.getLogger('asyncio').filters == filters\n"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr


def test_failed_reads_echo_nothing_and_leave_the_hook_and_logger_as_they_were(
    workdir: Path, capfd: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    import gc
    import sys

    for step in (1, 2, 3):
        _truncate_array_file(workdir / "checkpoints" / str(step))
    hook, filters = sys.unraisablehook, list(logging.getLogger("asyncio").filters)
    ckpt = Checkpointer(workdir, keep=5, keep_best=False, async_save=False)
    with caplog.at_level(logging.WARNING), pytest.raises(CheckpointCorruptError,
                                                         match="cannot read it back"):
        ckpt.restore_intact(_abstract(), expected_meta=META)
    ckpt.close()
    assert sys.unraisablehook is hook
    assert logging.getLogger("asyncio").filters == filters
    gc.collect()  # anything the restore left uncollected would report now, unfiltered
    assert "Traceback" not in capfd.readouterr().err
    assert not [r for r in caplog.records if r.name == "asyncio"]
