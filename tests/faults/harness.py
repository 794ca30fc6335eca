"""Drive `python -m tinyllm_jax.main` training runs and kill them on purpose.

Used by the fault tests and by `benchmarks/faults.py`. A run is a real
subprocess on the tiny config (24 steps, a checkpoint every 4); the harness
watches its workdir and log from outside and sends SIGKILL or SIGTERM when a
chosen moment arrives:

- `startup`       a random time after launch (imports, data, compile);
- `async_write`   the moment Orbax's temporary directory for a chosen step
                  appears, i.e. while the asynchronous checkpoint write runs;
- `mid_step`      a random delay after the log reports a chosen step;
- `after_commit`  right after a step directory is committed (Orbax is then
                  deleting the oldest step and the next steps run).

"Complete checkpoint" is decided here from the files alone, independently of
`tinyllm_jax.checkpoint`, so the tests check the code instead of itself.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
TOTAL_STEPS = 24
CHECKPOINT_EVERY = 4
TMP_MARK = ".orbax-checkpoint-tmp"
KINDS = ("startup", "async_write", "mid_step", "after_commit")
RESUMED_RE = re.compile(r"resumed from (\S+)/checkpoints/(\d+) \(iterator")
COMPILED_MARK = "train step compiled in"
# The files Orbax writes into every committed step of this project; a step
# directory without one of them was damaged or half deleted.
STEP_FILES = (
    "_CHECKPOINT_METADATA", "state/_METADATA", "state/manifest.ocdbt", "data/metadata",
    "meta/metadata",
)
POLL_S = 0.005  # Orbax's temporary directory lives ~0.3 s on the tiny config


def train_args(workdir: Path, *extra: str, steps: int = TOTAL_STEPS) -> list[str]:
    """The command line of one tiny training run (no evals: they only add time)."""
    return [
        sys.executable, "-m", "tinyllm_jax.main", "--config=configs/tiny.py",
        f"--workdir={workdir}", f"--config.train.steps={steps}",
        f"--config.train.checkpoint_every={CHECKPOINT_EVERY}", "--config.train.eval_every=0",
        "--config.train.final_eval_split=", *extra,
    ]


def subprocess_env(compile_cache: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1",
           "HF_HUB_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("XLA_FLAGS", None)  # one CPU device, as a fresh user shell has
    if compile_cache is not None:
        # The same executable from disk instead of a 10 s compile per process.
        env["JAX_COMPILATION_CACHE_DIR"] = str(compile_cache)
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    return env


# --- one process -----------------------------------------------------------------


@dataclasses.dataclass
class Run:
    proc: subprocess.Popen
    log_path: Path
    workdir: Path
    started: float
    metrics_offset: int  # metrics.jsonl bytes already read (or written by earlier runs)
    _logged_step: int = 0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, n: int = 3000) -> str:
        return self.log()[-n:]

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"run did not finish within {timeout:.0f}s; log tail:\n{self.tail()}"
            ) from None

    def last_logged_step(self) -> int:
        """The newest step this run wrote to metrics.jsonl (0 when none yet).

        Reads only what was appended since the last call: the harness polls
        this every few milliseconds next to a run it must not slow down."""
        path = self.workdir / "metrics.jsonl"
        if not path.exists():
            return self._logged_step
        with open(path, "rb") as f:
            f.seek(self.metrics_offset)
            chunk = f.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line being written waits
        self.metrics_offset += len(complete)
        for line in complete.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("kind") == "train":
                self._logged_step = max(self._logged_step, int(record["step"]))
        return self._logged_step

    def resumed_step(self) -> int | None:
        m = RESUMED_RE.search(self.log())
        return int(m.group(2)) if m else None

    def passed_restore(self) -> bool:
        """Whether the run got past choosing its starting checkpoint."""
        text = self.log()
        return RESUMED_RE.search(text) is not None or COMPILED_MARK in text


def launch(workdir: Path, log_path: Path, args: Sequence[str], env: dict[str, str]) -> Run:
    metrics = workdir / "metrics.jsonl"
    offset = metrics.stat().st_size if metrics.exists() else 0
    log_file = open(log_path, "wb")  # noqa: SIM115 - handed to the child, closed below
    try:
        proc = subprocess.Popen(list(args), cwd=REPO, env=env, stdout=log_file,
                                stderr=subprocess.STDOUT)
    finally:
        log_file.close()  # the child holds its own descriptor
    return Run(proc, log_path, workdir, time.monotonic(), offset)


# --- checkpoints as files ------------------------------------------------------------


def _entries(directory: Path) -> set[tuple[str, int]]:
    """(name, inode) of everything in `directory`: a name reused by a new
    directory gets a new inode, so a rewrite counts as new."""
    try:
        return {(e.name, e.inode()) for e in os.scandir(directory)}
    except FileNotFoundError:
        return set()


def step_is_complete(step_dir: Path) -> bool:
    if not step_dir.name.isdigit() or not step_dir.is_dir():
        return False
    if not all((step_dir / f).is_file() and (step_dir / f).stat().st_size > 0 for f in STEP_FILES):
        return False
    data = step_dir / "state" / "d"
    return data.is_dir() and any(data.iterdir())


def complete_steps(workdir: Path) -> list[int]:
    directory = workdir / "checkpoints"
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if step_is_complete(p))


def newest_complete(workdir: Path) -> int | None:
    steps = complete_steps(workdir)
    return steps[-1] if steps else None


def tmp_dirs(workdir: Path) -> list[str]:
    return sorted(n for n, _ in _entries(workdir / "checkpoints") if TMP_MARK in n)


def tree_of(step_dir: Path) -> dict[str, bytes]:
    """Every file under a directory with its bytes (to prove nothing changed)."""
    return {str(p.relative_to(step_dir)): p.read_bytes()
            for p in sorted(step_dir.rglob("*")) if p.is_file()}


def load_state(step_dir: Path) -> dict[str, np.ndarray]:
    """A saved train state as flat {path: numpy array}, read without a target."""
    import orbax.checkpoint as ocp

    restored = ocp.PyTreeCheckpointer().restore(step_dir / "state")
    flat: dict[str, np.ndarray] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k in sorted(node):
                walk(node[k], f"{prefix}/{k}")
        elif isinstance(node, list | tuple):
            for i, v in enumerate(node):
                walk(v, f"{prefix}/{i}")
        elif node is not None:
            flat[prefix] = np.asarray(node)

    walk(restored, "")
    return flat


def state_differences(a_dir: Path, b_dir: Path) -> list[str]:
    """Leaves (parameters, optimizer state, step, rng, counters) that are not
    bitwise equal between two saved steps, plus the data-iterator position."""
    a, b = load_state(a_dir), load_state(b_dir)
    diffs = [f"{k}: only in one state" for k in sorted(set(a) ^ set(b))]
    for k in sorted(set(a) & set(b)):
        x, y = a[k], b[k]
        if x.shape != y.shape or x.dtype != y.dtype or x.tobytes() != y.tobytes():
            diff = np.max(np.abs(x.astype(np.float64) - y.astype(np.float64))) if (
                x.shape == y.shape) else "shape"
            diffs.append(f"{k}: differs (max abs diff {diff})")
    da = json.loads((a_dir / "data" / "metadata").read_text())
    db = json.loads((b_dir / "data" / "metadata").read_text())
    if da != db:
        diffs.append(f"data iterator: {da} != {db}")
    return diffs


# --- kill points ---------------------------------------------------------------------


@dataclasses.dataclass
class KillPoint:
    kind: str
    target: float  # seconds after launch (startup) or a step number
    delay: float  # extra seconds between the trigger and the signal

    def describe(self) -> str:
        if self.kind == "startup":
            return f"startup, {self.target:.2f}s after launch"
        what = {"async_write": "during the async write of step",
                "mid_step": "after the log reached step",
                "after_commit": "after the commit of step"}[self.kind]
        return f"{self.kind}: {what} {int(self.target)}" + (
            f" + {self.delay:.3f}s" if self.delay else "")


def plan_kill(kind: str, rng: random.Random, start: int) -> KillPoint:
    """A random kill point of `kind` for a run resuming at `start` (< total)."""
    ckpts = [s for s in range(CHECKPOINT_EVERY, TOTAL_STEPS + 1, CHECKPOINT_EVERY) if s > start]
    if kind == "after_commit" and not [s for s in ckpts if s < TOTAL_STEPS]:
        kind = "async_write"  # resuming at the last interval: only the final write is left
    if kind == "startup":
        return KillPoint(kind, rng.uniform(0.5, 4.0), 0.0)
    if kind == "async_write":
        # The first or second write of this run: kills keep making progress.
        return KillPoint(kind, rng.choice(ckpts[:2]), 0.0)
    if kind == "after_commit":
        return KillPoint(kind, rng.choice([s for s in ckpts if s < TOTAL_STEPS][:2]),
                         rng.uniform(0.0, 0.05))
    if kind == "mid_step":
        # Within two intervals of the start, so later kills still find steps to land in.
        last = max(start + 1, min(start + 2 * CHECKPOINT_EVERY, TOTAL_STEPS - 2))
        return KillPoint(kind, rng.randint(start + 1, last), rng.uniform(0.0, 0.5))
    raise ValueError(f"unknown kill kind {kind!r}; expected one of {KINDS}")


def trigger(point: KillPoint, run: Run, before: set[tuple[str, int]]) -> Callable[[], bool]:
    """A predicate that turns true when the kill point has arrived."""
    checkpoints = run.workdir / "checkpoints"
    if point.kind == "startup":
        return lambda: time.monotonic() - run.started >= point.target
    if point.kind == "mid_step":
        return lambda: run.last_logged_step() >= point.target
    prefix = f"{int(point.target)}{TMP_MARK}"
    final = str(int(point.target))
    if point.kind == "async_write":
        return lambda: any(n.startswith(prefix) for n, _ in _entries(checkpoints) - before)
    if point.kind == "after_commit":
        return lambda: any(n == final for n, _ in _entries(checkpoints) - before) and (
            step_is_complete(checkpoints / final))
    raise ValueError(point.kind)


@dataclasses.dataclass
class KillResult:
    point: str
    kind: str
    target: float
    expected_start: int | None  # newest complete step before the run was launched
    resumed_from: int | None  # what the run printed (None: fresh start or killed before)
    passed_restore: bool
    killed_after_s: float
    last_logged_step: int
    tmp_dirs_at_kill: list[str]
    complete_after: list[int]
    returncode: int | None
    fired: bool
    log: str

    @property
    def start_ok(self) -> bool:
        """The run started from the newest complete checkpoint (or could not
        have said so yet: killed before it chose one)."""
        if not self.passed_restore:
            return True
        return self.resumed_from == self.expected_start

    @property
    def landed_during_write(self) -> bool:
        if self.kind != "async_write":
            return False
        step = int(self.target)
        return step not in self.complete_after and any(
            n.startswith(f"{step}{TMP_MARK}") for n in self.tmp_dirs_at_kill)


def run_until(point: KillPoint, workdir: Path, log_path: Path, env: dict[str, str],
              args: Sequence[str], timeout: float = 300.0, sig: int = signal.SIGKILL) -> KillResult:
    """Launch one run and send `sig` at `point`; the run may also end first."""
    expected = newest_complete(workdir)
    before = _entries(workdir / "checkpoints")
    run = launch(workdir, log_path, args, env)
    fired = trigger(point, run, before)
    deadline = time.monotonic() + timeout
    hit = False
    while run.proc.poll() is None and time.monotonic() < deadline:
        if fired():
            hit = True
            break
        time.sleep(POLL_S)
    if hit and point.delay:
        time.sleep(point.delay)
    at = time.monotonic() - run.started
    tmp_now = tmp_dirs(workdir)
    if run.proc.poll() is None:
        run.proc.send_signal(sig)
    rc = run.wait(timeout=120)
    return KillResult(
        point=point.describe(), kind=point.kind, target=point.target, expected_start=expected,
        resumed_from=run.resumed_step(), passed_restore=run.passed_restore(),
        killed_after_s=at, last_logged_step=run.last_logged_step(), tmp_dirs_at_kill=tmp_now,
        complete_after=complete_steps(workdir), returncode=rc, fired=hit, log=run.log(),
    )


@dataclasses.dataclass
class Campaign:
    kills: list[KillResult]
    final_returncode: int
    final_expected_start: int | None
    final_resumed_from: int | None
    final_log: str
    seconds: float

    def failures(self) -> list[str]:
        out = []
        for i, k in enumerate(self.kills, 1):
            if not k.fired:
                out.append(f"kill {i} ({k.point}) never fired: the run ended with {k.returncode}")
            elif k.returncode != -signal.SIGKILL:
                out.append(f"kill {i} ({k.point}): exit status {k.returncode}, not SIGKILL")
            if not k.start_ok:
                out.append(f"kill {i}: run resumed from {k.resumed_from}, newest complete "
                           f"checkpoint was {k.expected_start}")
        writes = [k for k in self.kills if k.kind == "async_write" and k.fired]
        if writes and not any(k.landed_during_write for k in writes):
            # One late poll (a loaded machine) is tolerated; none landing is not.
            out.append("no async_write kill landed inside the write: "
                       + "; ".join(f"tmp dirs {k.tmp_dirs_at_kill}, complete {k.complete_after}"
                                   for k in writes))
        if self.final_returncode != 0:
            out.append(f"final run exited with {self.final_returncode}")
        if self.final_resumed_from != self.final_expected_start:
            out.append(f"final run resumed from {self.final_resumed_from}, newest complete "
                       f"checkpoint was {self.final_expected_start}")
        return out

    def table(self) -> str:
        rows = [f"  #  {'kill point':<50}  start  resumed  killed@   logged  complete after"]
        for i, k in enumerate(self.kills, 1):
            rows.append(
                f"  {i}  {k.point:<50}  {k.expected_start!s:>5}  "
                f"{(k.resumed_from if k.passed_restore else '-')!s:>7}  {k.killed_after_s:6.2f}s  "
                f"{k.last_logged_step:>6}  {k.complete_after}"
                + ("  (late: after the write)" if k.kind == "async_write" and k.fired
                   and not k.landed_during_write else "")
            )
        rows.append(f"  final run: exit {self.final_returncode}, resumed from "
                    f"{self.final_resumed_from} (newest complete {self.final_expected_start})")
        return "\n".join(rows)


def kill_campaign(workdir: Path, logs: Path, kinds: Sequence[str], rng: random.Random,
                  env: dict[str, str], timeout: float = 300.0) -> Campaign:
    """SIGKILL a run at each of `kinds` (planned from where it resumes), then
    let a last run finish. Each run's start is checked against the files."""
    logs.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    kills = []
    for i, kind in enumerate(kinds, 1):
        point = plan_kill(kind, rng, newest_complete(workdir) or 0)
        kills.append(run_until(point, workdir, logs / f"kill{i}.log", env, train_args(workdir),
                               timeout))
    expected = newest_complete(workdir)
    final = launch(workdir, logs / "final.log", train_args(workdir), env)
    rc = final.wait(timeout)
    return Campaign(kills, rc, expected, final.resumed_step(), final.log(),
                    time.monotonic() - t0)


def random_kinds(rng: random.Random, n: int = 5) -> list[str]:
    """Every kind once (so an async write is always among them), the rest
    drawn at random, in random order."""
    kinds = list(KINDS) + [rng.choice(KINDS) for _ in range(max(0, n - len(KINDS)))]
    rng.shuffle(kinds)
    return kinds[:n] if n >= len(KINDS) else ["async_write", *kinds][:n]
