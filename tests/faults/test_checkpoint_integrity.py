"""Damaged checkpoints: the newest intact one is used with a warning naming
the damaged one; with none intact, a clear error and not a byte changed.

The damage kinds are run on small states in-process (fast); two cases run
the real training entry point on a copy of the reference workdir.
"""

from __future__ import annotations

import json
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
    ChecksumMismatchError,
    step_problems,
)

META = {"model": {"d_model": 4}, "teachers": ["a"], "tokenizer": "byte", "dataset": "x",
        "tokenizer_vocab_size": 259}


# 16 KiB of random (incompressible) values: OCDBT stores it in a data file
# of its own instead of inline in its index, so truncating that file really
# loses array bytes, as it would for model weights.
W_SHAPE = (64, 64)


def _data(step: int) -> dict[str, int]:
    """The data item as training saves it: an iterator position."""
    return {"seed": 0, "epoch": 0, "position": step}


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
        ckpt.save(step, _state(step), _data(step), META)
    ckpt.wait()
    ckpt.close()
    return tmp_path


def _truncate_array_file(step_dir: Path) -> None:
    """Cut the biggest array data file (under an OCDBT `d/` directory) in half."""
    data = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    path = max(data, key=lambda p: p.stat().st_size)
    os.truncate(path, path.stat().st_size // 2)


def _largest_array_file(step_dir: Path) -> Path:
    data = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    return max(data, key=lambda p: p.stat().st_size)


def _flip_array_byte(step_dir: Path) -> None:
    """One byte inverted in the middle of the array data: TensorStore reads it
    back without an error, as other numbers."""
    path = _largest_array_file(step_dir)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _zero_array_block(step_dir: Path) -> None:
    """A 512-byte block of zeros, as a disk returns for a lost sector. Placed
    where the compressed stream holds array bytes verbatim, so it decompresses
    without an error (elsewhere TensorStore raises, which is caught anyway)."""
    path = _largest_array_file(step_dir)
    data = bytearray(path.read_bytes())
    start = len(data) // 10
    data[start : start + 512] = bytes(512)
    path.write_bytes(bytes(data))


def _edit_json(rel: str, edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def damage(step_dir: Path) -> None:
        value = json.loads((step_dir / rel).read_text())
        edit(value)
        (step_dir / rel).write_text(json.dumps(value))
    return damage


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
    "flipped byte in an array file": _flip_array_byte,
    "zeroed block in an array file": _zero_array_block,
    "edited array checksum": _edit_json("checksums/metadata", lambda v: v["arrays"]["w"].update(
        checksum="0123456789abcdef")),
    "checksums item without an array": _edit_json("checksums/metadata",
                                                  lambda v: v["arrays"].pop("b")),
    "missing checksums item": _remove("checksums"),
    "torn checksums item": _overwrite("checksums/metadata", b'{"algorithm": "mur'),
    "negative iterator position": _edit_json("data/metadata", lambda v: v.update(position=-1)),
    "iterator position not an integer": _edit_json("data/metadata",
                                                   lambda v: v.update(position=2.5)),
    "iterator state without its epoch": _edit_json("data/metadata", lambda v: v.pop("epoch")),
    "data item is a JSON list": _overwrite("data/metadata", b"[0, 0, 3]"),
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
    assert restored.data == _data(2)
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
    assert ckpt.save(3, _state(30), _data(30), META, force=True)
    ckpt.wait()
    again = ckpt.restore_intact(_abstract(), expected_meta=META)
    ckpt.close()
    assert again is not None and again.step == 3 and again.data == _data(30)


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


@pytest.mark.parametrize("kind", ["flipped byte in an array file", "zeroed block in an array file"])
def test_damaged_array_bytes_are_named_by_array_path(workdir: Path, kind: str,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    step3 = workdir / "checkpoints" / "3"
    DAMAGE[kind](step3)
    ckpt = Checkpointer(workdir, keep=5, keep_best=False, async_save=False)
    with caplog.at_level(logging.WARNING, logger="tinyllm_jax.checkpoint"):
        restored = ckpt.restore_intact(_abstract(), expected_meta=META)
    ckpt.close()
    assert restored is not None and restored.step == 2 and not restored.unverified
    (step, reason), = restored.damaged
    assert step == 3 and reason.startswith("array w does not match its checksum (recorded ")
    # A mismatch may be a passing read error: read once more before skipping.
    assert f"reading {step3} failed" in caplog.text


def test_invalid_iterator_position_names_the_file_and_is_not_read_twice(
    workdir: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    step3 = workdir / "checkpoints" / "3"
    DAMAGE["negative iterator position"](step3)
    ckpt = Checkpointer(workdir, keep=5, keep_best=False, async_save=False)
    with caplog.at_level(logging.WARNING, logger="tinyllm_jax.checkpoint"):
        restored = ckpt.restore_intact(_abstract(), expected_meta=META, move_damaged=True)
    ckpt.close()
    assert restored is not None and restored.step == 2 and restored.data == _data(2)
    (_, reason), = restored.damaged
    assert reason == (f"item 'data' ({step3 / 'data' / 'metadata'}) is not an iterator position: "
                      "position=-1 is negative")
    assert "trying once more" not in caplog.text
    assert (workdir / DAMAGED_DIR / "3" / "data" / "metadata").is_file()


def _as_old_checkpoint(step_dir: Path) -> None:
    """A step as written before checksums were recorded."""
    _remove("checksums")(step_dir)
    _edit_json("_CHECKPOINT_METADATA", lambda v: v["item_handlers"].pop("checksums"))(step_dir)


def test_checkpoint_without_checksums_is_used_unverified_with_a_warning(
    workdir: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    step3 = workdir / "checkpoints" / "3"
    _as_old_checkpoint(step3)
    assert step_problems(step3) == []
    ckpt = Checkpointer(workdir, keep=5, keep_best=False, async_save=False)
    with caplog.at_level(logging.WARNING, logger="tinyllm_jax.checkpoint"):
        restored = ckpt.restore_intact(_abstract(), expected_meta=META)
        newest = ckpt.restore_intact(_abstract(), expected_meta=META, prefer=2)
    ckpt.close()
    assert restored is not None and restored.step == 3 and restored.unverified
    assert restored.damaged == []
    np.testing.assert_array_equal(restored.state["w"], _state(3)["w"])
    assert f"checkpoint {step3} has no array checksums" in caplog.text
    assert newest is not None and newest.step == 2 and not newest.unverified


def test_restore_verifies_and_names_the_damaged_step(workdir: Path) -> None:
    _flip_array_byte(workdir / "checkpoints" / "3")
    ckpt = Checkpointer(workdir, keep=5, keep_best=False, async_save=False)
    with pytest.raises(ChecksumMismatchError, match=r"checkpoints/3 is damaged: array w does not"):
        ckpt.restore(3, _abstract(), expected_meta=META)
    state, data, _ = ckpt.restore(2, _abstract(), expected_meta=META)
    ckpt.close()
    assert data == _data(2)
    np.testing.assert_array_equal(state["w"], _state(2)["w"])


def test_last_intact_step_is_verified_not_merely_the_last_saved(workdir: Path) -> None:
    ckpt = Checkpointer(workdir, keep=5, keep_best=False, async_save=False)
    assert ckpt.last_intact_step(_abstract(), META) == 3
    _flip_array_byte(workdir / "checkpoints" / "3")
    assert ckpt.last_intact_step(_abstract(), META) == 2
    for step in (1, 2):
        _zero_array_block(workdir / "checkpoints" / str(step))
    assert ckpt.last_intact_step(_abstract(), META) is None
    ckpt.close()
    assert (workdir / "checkpoints" / "3").is_dir(), "a check must not move anything"


def test_parameters_only_restore_verifies_the_parameters(tmp_path: Path) -> None:
    """Evaluation and Student.from_workdir read only `params`; damage there
    falls back, damage elsewhere in the state does not matter to them."""
    ckpt = Checkpointer(tmp_path, keep=5, keep_best=False, async_save=False)
    for step in (1, 2):
        ckpt.save(step, {"params": {"w": _state(step)["w"]}, "opt": _state(step + 10)["w"]},
                  _data(step), META)
    ckpt.close()
    _flip_array_byte(tmp_path / "checkpoints" / "2")  # the largest file: one of the two arrays
    abstract = {"w": _abstract()["w"]}
    ckpt = Checkpointer(tmp_path, keep=5, keep_best=False, async_save=False)
    step, params, meta = ckpt.restore_params_intact(lambda meta: abstract)
    full = ckpt.restore_intact({"params": abstract, "opt": _abstract()["w"]}, META)
    ckpt.close()
    assert meta == META and full is not None and full.step == 1
    np.testing.assert_array_equal(params["w"], _state(step)["w"])
    (_, reason), = full.damaged
    assert reason.startswith(("array params/w does not match", "array opt does not match"))
    assert step == (1 if "params/w" in reason else 2)


# --- through the training entry point ------------------------------------------------


@pytest.mark.parametrize("kind, reason", [
    ("truncated array file", "cannot read it back"),
    # Reads back without an error: only the checksums show it.
    ("flipped byte in an array file", "array "),
])
def test_training_resumes_before_a_damaged_checkpoint_and_matches_reference(
    reference: Path, compile_cache: Path, tmp_path: Path, kind: str, reason: str,
) -> None:
    workdir = tmp_path / "wd"
    shutil.copytree(reference, workdir)
    newest = workdir / "checkpoints" / "24"
    DAMAGE[kind](newest)
    damaged = harness.tree_of(newest)
    run = harness.launch(workdir, tmp_path / "run.log", harness.train_args(workdir),
                         harness.subprocess_env(compile_cache))
    assert run.wait(timeout=300) == 0, run.tail()
    log = run.log()
    assert f"{newest} is damaged and is skipped: {reason}" in log
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
