"""Run every case of the bad-input corpus (tests/data/bad/cases*.json) and
print the figures: cases tried, clear errors, counted skips, crashes with a
bare traceback, silent wrong results, hangs and data lost (all but the
first three must be 0).

A case feeds one bad input to the code a user would run: a reader
(in-process, classified the way the entry points treat exceptions) or the
command line itself (a subprocess). Outcomes:

- clear error: an exception the entry points print as `error: ...` (a
  ValueError, an OSError or a TeacherError) whose message holds the
  case's fragment (which names the file, line or field); for the command
  line, the expected exit status, the fragment in the output, no traceback;
- counted skip: no error, and the case's DataReport key (or counter) is > 0;
- crash: any other exception, or a traceback in a command's output;
- silent wrong result: no error where one was expected (or a skip that was
  not counted): the code went on with a bad input;
- hang: a command still running after the case's `timeout_s` (default 180);
- data lost: a file of the case's input changed or vanished (files the case
  lists under `may_change` are outputs, not inputs).

Besides copying its input, a case's `setup.fs` lays out file-system faults
in its scratch directory before the call: `{"file": P}` (an empty file),
`{"dir": P}`, `{"write": [P, text]}`, `{"link": [P, target]}` (a symlink,
e.g. to /dev/full for a full disk). Paths are relative to the scratch
directory and may use the placeholders.

Everything else (a vague message, a silent success) is an unexpected outcome
and fails the test too. Inputs are copied to a scratch directory first.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.faults import harness
from tinyllm_jax.cli import USER_ERRORS
from tinyllm_jax.configs import load_config_file
from tinyllm_jax.teachers.config import TeacherError

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "data" / "bad"
# What tinyllm_jax.main and tinyllm_jax.teachers turn into "error: ..." and exit 2
# (cli.USER_ERRORS: ValueError and every OSError).
HANDLED = (*USER_ERRORS, TeacherError)
TRACEBACK = "Traceback (most recent call last)"
CLI_WORKERS = 3  # command-line cases are mostly import time: overlap a few

# A small T5 for the HF-directory cases, and a small saved state for the
# checkpoint cases (16 KiB of random values, so OCDBT keeps it in its own file).
HF_TINY = dict(vocab_size=32, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2)
CKPT_META = {"model": {"d_model": 4}, "teachers": [], "tokenizer": "byte", "dataset": "x",
             "tokenizer_vocab_size": 259}
# The Student cases: a tiny model over the byte vocabulary, exported with its tokenizer.
STUDENT_TINY = dict(vocab_size=259, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2)


@dataclasses.dataclass
class Outcome:
    case: dict[str, Any]
    result: str  # clear error | counted skip | crash | unclear error | no error | ...
    detail: str
    data_lost: list[str]

    @property
    def expected(self) -> bool:
        want = "clear error" if self.case["expect"] == "error" else "counted skip"
        return self.result == want


def _fill(value: Any, ctx: dict[str, str]) -> Any:
    if isinstance(value, str):
        for key, path in ctx.items():
            value = value.replace("{" + key + "}", path)
        return value
    if isinstance(value, list):
        return [_fill(v, ctx) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, ctx) for k, v in value.items()}
    return value


# --- inputs ------------------------------------------------------------------------


def _hf_base(cache: Path) -> Path:
    """A valid HF T5 directory written by our exporter (built once)."""
    directory = cache / "hf_base"
    if not directory.exists():
        import jax
        import numpy as np
        from flax import linen as nn

        from tinyllm_jax.models.hf import save_hf_checkpoint
        from tinyllm_jax.models.t5 import T5Config, init_params

        config = T5Config(**HF_TINY)
        params = jax.tree.map(np.asarray, nn.meta.unbox(init_params(config, jax.random.PRNGKey(0))))
        save_hf_checkpoint(directory, config, params)
    return directory


def _student_base(cache: Path) -> Path:
    """A Student exported with `save_hf`, byte tokenizer included (built once)."""
    directory = cache / "student_base"
    if not directory.exists():
        import jax
        from flax import linen as nn

        from tinyllm_jax.models.t5 import T5Config, init_params
        from tinyllm_jax.student import Student
        from tinyllm_jax.tokenizers import ByteTokenizer

        config = T5Config(**STUDENT_TINY)
        params = nn.meta.unbox(init_params(config, jax.random.PRNGKey(0)))
        Student(config, params, ByteTokenizer()).save_hf(directory)
    return directory


def _edit_hf(hf: Path, setup: dict[str, Any]) -> None:
    """`config_set` (fields written into config.json) and `tensor_edit`
    ({tensor, nan_at: index} or {tensor, dtype}) in model.safetensors."""
    if "config_set" in setup:
        raw = json.loads((hf / "config.json").read_text())
        raw.update(setup["config_set"])
        (hf / "config.json").write_text(json.dumps(raw))
    if "tensor_edit" in setup:
        import numpy as np
        import safetensors.numpy

        tensors = safetensors.numpy.load_file(str(hf / "model.safetensors"))
        for edit in setup["tensor_edit"]:
            name = edit["tensor"]
            if "nan_at" in edit:
                tensors[name][tuple(edit["nan_at"])] = np.nan
            if "dtype" in edit:
                tensors[name] = tensors[name].astype(edit["dtype"])
        safetensors.numpy.save_file(tensors, str(hf / "model.safetensors"))


def _json_path_edit(path: Path, key_path: str, value: Any, drop: bool = False) -> None:
    """Set (or drop) one value inside a JSON file, by a "/"-separated key path."""
    data = json.loads(path.read_text())
    *parents, leaf = key_path.split("/")
    node = data
    for key in parents:
        node = node[key]
    if drop:
        del node[leaf]
    else:
        node[leaf] = value
    path.write_text(json.dumps(data))


def _small_state(step: int) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp

    return {"w": jax.random.normal(jax.random.PRNGKey(step), (64, 64)), "b": jnp.arange(3.0)}


def _small_abstract() -> dict[str, Any]:
    import jax

    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding)
            for k, v in _small_state(0).items()}


def _array_file(step_dir: Path) -> Path:
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    return max(files, key=lambda p: p.stat().st_size)


def _checkpoint_base(work: Path, damage: list[dict[str, Any]]) -> None:
    """Steps 1 and 2 of a small state, then `damage` per step: truncate_array,
    flip_array_byte (middle of the array data), zero_array_block (512 bytes
    at a tenth of it: both read back without an error), remove (a path in the
    step), write ([path, text]), json_set ([file, key path, value]),
    json_drop ([file, key path]), as_old (no checksums item, as written
    before checksums were recorded)."""
    from tinyllm_jax.checkpoint import Checkpointer

    ckpt = Checkpointer(work / "ckpt", keep=5, keep_best=False, async_save=False)
    for step in (1, 2):
        ckpt.save(step, _small_state(step), {"seed": 0, "epoch": 0, "position": step}, CKPT_META)
    ckpt.wait()
    ckpt.close()
    for d in damage:
        step_dir = work / "ckpt" / "checkpoints" / str(d["step"])
        if d.get("truncate_array"):
            target = _array_file(step_dir)
            os.truncate(target, target.stat().st_size // 2)
        if d.get("flip_array_byte") or d.get("zero_array_block"):
            target = _array_file(step_dir)
            data = bytearray(target.read_bytes())
            if d.get("flip_array_byte"):
                data[len(data) // 2] ^= 0xFF
            else:
                data[len(data) // 10 : len(data) // 10 + 512] = bytes(512)
            target.write_bytes(bytes(data))
        if "remove" in d:
            path = step_dir / d["remove"]
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        if "write" in d:
            (step_dir / d["write"][0]).write_text(d["write"][1])
        if "json_set" in d:
            _json_path_edit(step_dir / d["json_set"][0], d["json_set"][1], d["json_set"][2])
        if "json_drop" in d:
            _json_path_edit(step_dir / d["json_drop"][0], d["json_drop"][1], None, drop=True)
        if d.get("as_old"):
            shutil.rmtree(step_dir / "checksums")
            _json_path_edit(step_dir / "_CHECKPOINT_METADATA", "item_handlers/checksums", None,
                            drop=True)


def _prepare(case: dict[str, Any], work: Path, cache: Path) -> dict[str, str]:
    """Copy the case's input into `work` and apply its setup; the placeholders."""
    work.mkdir(parents=True)
    ctx = {"work": str(work), "repo": str(REPO)}
    if "input" in case:
        source = CORPUS / case["input"]
        target = work / source.name
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
        ctx["input"] = str(target)
    setup = case.get("setup", {})
    if setup.get("hf_base"):
        hf = work / "hf"
        shutil.copytree(_hf_base(cache), hf)
        if "overlay" in setup:
            for f in (CORPUS / setup["overlay"]).iterdir():
                shutil.copy2(f, hf / f.name)
        for name in setup.get("remove", []):
            (hf / name).unlink()
        for name, fraction in setup.get("truncate", {}).items():
            os.truncate(hf / name, int((hf / name).stat().st_size * fraction))
        _edit_hf(hf, setup)
    if setup.get("student_base"):
        shutil.copytree(_student_base(cache), work / "student")
    if setup.get("checkpoint_base"):
        _checkpoint_base(work, setup.get("damage", []))
    for op in setup.get("fs", []):
        _fs_op(work, _fill(op, ctx))
    return ctx


def _fs_op(work: Path, op: dict[str, Any]) -> None:
    kind, value = next(iter(op.items()))
    if kind == "link":
        path = work / value[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(value[1])
        return
    path = work / (value[0] if isinstance(value, list) else value)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "file":
        path.touch()
    elif kind == "dir":
        path.mkdir(exist_ok=True)
    elif kind == "write":
        path.write_text(value[1])
    else:
        raise ValueError(f"unknown setup.fs operation {kind!r}")


# --- how each kind of input is fed to the code -----------------------------------------


def _read_split(args: dict[str, Any], work: Path) -> dict[str, int]:
    from tinyllm_jax.data.tinyllm import read_split

    _, report = read_split(args["root"], args["dataset"], args["split"], tuple(args["teachers"]),
                           store_dir=args.get("store_dir"))
    return dict(report.counts)


def _load_tokenizer(args: dict[str, Any], work: Path) -> dict[str, int]:
    from tinyllm_jax.data.tokenizer import load_named_tokenizer

    load_named_tokenizer(args["spec"])
    return {}


def _load_hf(args: dict[str, Any], work: Path) -> dict[str, int]:
    from tinyllm_jax.models.hf import load_hf_checkpoint

    load_hf_checkpoint(args["path"])
    return {}


def _teacher_config(args: dict[str, Any], work: Path) -> dict[str, int]:
    from tinyllm_jax.teachers.config import run_spec

    run_spec(load_config_file(args["config"]))
    return {}


def _train(args: dict[str, Any], work: Path) -> dict[str, int]:
    from tinyllm_jax.train import train_and_evaluate

    cfg = load_config_file(REPO / args["config"], args.get("arg") or None)
    for key, value in args.get("overrides", {}).items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = tuple(value) if isinstance(value, list) else value
    train_and_evaluate(cfg, args["workdir"])
    return {}


def _restore_checkpoint(args: dict[str, Any], work: Path) -> dict[str, int]:
    from tinyllm_jax.checkpoint import Checkpointer

    ckpt = Checkpointer(work / "ckpt", keep=5, keep_best=False, async_save=False)
    try:
        restored = ckpt.restore_intact(_small_abstract(), expected_meta=CKPT_META)
    finally:
        ckpt.close()
    return {"damaged_checkpoints": len(restored.damaged) if restored else 0,
            "unverified_checkpoints": int(bool(restored and restored.unverified))}


def _student(args: dict[str, Any], work: Path) -> dict[str, int]:
    """Student.load(path), then one call: `method` with `kwargs` (lists of ids
    become arrays for `logits`)."""
    import numpy as np

    from tinyllm_jax.student import Student

    student = Student.load(args["path"])
    if student.tokenizer is None:
        raise RuntimeError(f"{args['path']}: the exported student was loaded without its "
                           "tokenizer")
    kwargs = dict(args.get("kwargs", {}))
    if args["method"] == "logits":
        kwargs = {k: np.asarray(v) for k, v in kwargs.items()}
    getattr(student, args["method"])(**kwargs)
    return {}


def _load_data(args: dict[str, Any], work: Path) -> dict[str, int]:
    """data.bundle.load_data on a config.data section: the report printed at training start."""
    from tinyllm_jax.data.bundle import load_data
    from tinyllm_jax.spec import data_spec

    bundle = load_data(data_spec(args["data"]), tuple(args.get("splits", ())), model_vocab=1 << 20)
    return dict(bundle.report.counts)


RUNNERS: dict[str, Callable[[dict[str, Any], Path], dict[str, int]]] = {
    "read_split": _read_split,
    "load_tokenizer": _load_tokenizer,
    "load_hf_checkpoint": _load_hf,
    "teacher_config": _teacher_config,
    "train": _train,
    "restore_checkpoint": _restore_checkpoint,
    "load_data": _load_data,
    "student": _student,
}


def _classify_call(case: dict[str, Any], ctx: dict[str, str], work: Path) -> tuple[str, str]:
    fragment = _fill(case.get("message", ""), ctx)
    try:
        counts = RUNNERS[case["call"]](_fill(case.get("args", {}), ctx), work)
    except HANDLED as e:
        text = f"{type(e).__name__}: {e}"
        if case["expect"] == "error" and fragment in str(e):
            return "clear error", text
        return ("unclear error" if case["expect"] == "error" else "unexpected error"), text
    except Exception as e:  # exactly what the test is looking for
        return "crash", "".join(traceback.format_exception_only(type(e), e)).strip()
    if case["expect"] == "skip":
        n = counts.get(case["count"], 0)
        return ("counted skip" if n > 0 else "skip not counted"), f"{case['count']}={n}"
    return "no error", "returned normally"


def _classify_cli(case: dict[str, Any], ctx: dict[str, str]) -> tuple[str, str]:
    argv = [sys.executable, *_fill(case["argv"], ctx)]
    try:
        proc = subprocess.run(argv, cwd=REPO, env=harness.subprocess_env(), capture_output=True,
                              text=True, timeout=case.get("timeout_s", 180))
    except subprocess.TimeoutExpired as e:
        return "hang", f"still running after {e.timeout}s"
    out = proc.stdout + proc.stderr
    tail = out.strip()[-600:]
    if TRACEBACK in out:
        return "crash", tail
    if proc.returncode == 0:
        return "no error", tail
    if proc.returncode != case.get("exit_code", 2):
        return "wrong exit status", f"exit {proc.returncode}: {tail}"
    if _fill(case["message"], ctx) in out:
        return "clear error", tail
    return "unclear error", tail


def _run_case(case: dict[str, Any], root: Path, cache: Path) -> Outcome:
    work = root / case["id"].replace("/", "__")
    ctx = _prepare(case, work, cache)
    before = harness.tree_of(work)
    if case["call"] == "cli":
        result, detail = _classify_cli(case, ctx)
    else:
        result, detail = _classify_call(case, ctx, work)
    after = harness.tree_of(work)
    outputs = tuple(case.get("may_change", ()))
    lost = sorted(k for k, v in before.items() if after.get(k) != v and not k.startswith(outputs))
    return Outcome(case, result, detail, lost)


def _figures(outcomes: list[Outcome]) -> str:
    count = lambda r: sum(o.result == r for o in outcomes)  # noqa: E731
    unexpected = sum(not o.expected for o in outcomes)
    silent = count("no error") + count("skip not counted")
    return (f"bad-input corpus: {len(outcomes)} cases tried, {count('clear error')} clear errors, "
            f"{count('counted skip')} counted skips, {count('crash')} crashes with a bare "
            f"traceback, {silent} silent wrong results, {count('hang')} hangs, "
            f"{sum(bool(o.data_lost) for o in outcomes)} data lost "
            f"({unexpected} unexpected outcomes)")


def test_bad_input_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = [c for path in sorted(CORPUS.glob("cases*.json"))
             for c in json.loads(path.read_text())["cases"]]
    ids = [c["id"] for c in cases]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    assert len(cases) >= 30
    cache = tmp_path / "cache"
    cache.mkdir()
    cli = [c for c in cases if c["call"] == "cli"]
    with concurrent.futures.ThreadPoolExecutor(CLI_WORKERS) as pool:
        pending = [pool.submit(_run_case, c, tmp_path, cache) for c in cli]
        outcomes = [_run_case(c, tmp_path, cache) for c in cases if c["call"] != "cli"]
        outcomes += [f.result() for f in pending]

    by_kind: dict[str, list[Outcome]] = {}
    for o in outcomes:
        by_kind.setdefault(o.case["kind"], []).append(o)
    lines = [_figures(outcomes)]
    for kind, items in sorted(by_kind.items()):
        lines.append(f"  {kind:<24} {len(items):>3} cases, "
                     f"{sum(o.expected for o in items):>3} as expected")
    bad = [o for o in outcomes if not o.expected or o.data_lost]
    for o in bad:
        lines.append(f"  UNEXPECTED {o.case['id']}: expected {o.case['expect']}, got {o.result}"
                     f"{' (data lost: ' + ', '.join(o.data_lost) + ')' if o.data_lost else ''}"
                     f"\n      {o.detail[-400:]}")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert sum(o.result in ("crash", "hang") for o in outcomes) == 0, "\n".join(lines)
    assert not any(o.data_lost for o in outcomes), "\n".join(lines)
    assert not bad, "\n".join(lines)
