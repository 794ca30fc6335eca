"""The training loop, in big_vision-style banner sections.

    train_and_evaluate(spec, workdir)     # --mode=train

The same code runs on one CPU or a pod: the mesh comes from `spec.mesh`,
every host feeds its own rows, and Orbax writes checkpoints collectively.
Everything the step is made of comes from `setup.build`, the path the
compile check and the benchmarks use too.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from tinyllm_jax import checkpoint as ckpt_lib
from tinyllm_jax import metrics as metrics_lib
from tinyllm_jax import progress as progress_lib
from tinyllm_jax import run_config, tracking
from tinyllm_jax import setup as setup_lib
from tinyllm_jax.atomic import write_json_atomic
from tinyllm_jax.compile_cache import enable_compilation_cache
from tinyllm_jax.data.bundle import load_data
from tinyllm_jax.data.features import ANSWER_TASK, task_names
from tinyllm_jax.data.iterator import BatchIterator
from tinyllm_jax.data.pipeline import make_iterator
from tinyllm_jax.dirlock import DirectoryLock
from tinyllm_jax.evaluation.predictions import write_predictions
from tinyllm_jax.evaluation.run import evaluate_run_split
from tinyllm_jax.evaluation.scoring import accuracy_text
from tinyllm_jax.preemption import Preemption
from tinyllm_jax.spec import RunSpec, TrainSpec, parse
from tinyllm_jax.stop_agreement import StopAgreement
from tinyllm_jax.workdir import TRAIN_DIRS, TRAIN_FILES, WorkdirError, prepare_output_dir

log = logging.getLogger(__name__)


class NonFiniteError(RuntimeError):
    """Loss or gradients were NaN/inf and config.train.nonfinite == 'stop'."""


# --- steps ----------------------------------------------------------------------------


def train_steps(train: TrainSpec, iterator: BatchIterator) -> int:
    """Optimizer steps of the run: `train.steps`, or `train.epochs` passes over the rows."""
    if not train.epochs:
        steps = train.steps
    else:
        # Epoch 0's row count stands for every epoch: packing the other
        # permutations changes it by a row or two at most.
        steps = int(np.ceil(train.epochs * iterator.batches_in_epoch(0)))
    if steps < 1:
        raise ValueError(f"the run has no training steps (train.steps={train.steps}, "
                         f"train.epochs={train.epochs})")
    return steps


def _batch_stats(batch: dict[str, np.ndarray]) -> tuple[int, int]:
    """(answer-task examples, real tokens) in this host's rows."""
    starts = (batch["decoder_positions"] == 0) & (batch["decoder_segment_ids"] > 0)
    examples = int(np.sum(starts & (batch["decoder_task_ids"] == ANSWER_TASK)))
    tokens = int(np.sum(batch["encoder_segment_ids"] > 0) + np.sum(batch["decoder_segment_ids"] > 0))
    return examples, tokens


# --- the loop -----------------------------------------------------------------------


def claim_workdir(spec: RunSpec, workdir: str) -> DirectoryLock | None:
    """Check the workdir (tinyllm_jax.workdir) and take its lock, before any
    data is read. Only process 0 does both; every process learns the outcome,
    so a refused multi-host run stops on all hosts instead of hanging."""
    lock, error = None, None
    if jax.process_index() == 0:
        outputs = (*TRAIN_FILES, *(f"predictions_{s}.jsonl" for s in (spec.eval.final_split,) if s))
        try:
            prepare_output_dir(workdir, dirs=TRAIN_DIRS, files=outputs)
            lock = DirectoryLock(workdir, what="training workdir")
            lock.acquire()
        except (ValueError, OSError) as e:
            lock, error = None, e
    if jax.process_count() > 1:
        ok = bool(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
        if not ok and error is None:
            raise WorkdirError(f"--workdir {workdir}: process 0 could not use it (its log says "
                               "why); this process stops too")
    if error is not None:
        raise error
    return lock


def train_and_evaluate(config: Any, workdir: str, *, abort_process: bool = False
                       ) -> dict[str, Any]:
    """Train, evaluate and report; `config` is a RunSpec or a ConfigDict (parsed here).

    summary["status"]: "completed", "preempted" (SIGTERM: saved and stopped)
    or "interrupted" (Ctrl-C in the loop: saved and stopped). A Ctrl-C before
    or after the loop, or a second one, raises KeyboardInterrupt; with
    `abort_process` (the command line) a second one ends the process at once.
    """
    spec = parse(config)
    # Before anything slow: a SIGTERM during start-up then makes the loop run
    # one step, save and exit 0 instead of killing the process.
    with Preemption(interrupts=True, abort_process=abort_process,
                    stop_note="stopped by Ctrl-C outside the training loop, with nothing unsaved; "
                              "the same command resumes from the last checkpoint") as preempt:
        lock = claim_workdir(spec, workdir)
        if lock is not None:
            preempt.before_abort(lock.release)
        closers: list[Any] = []  # filled by the run: the checkpointer, the metric writer
        try:
            return _train_and_evaluate(spec, workdir, preempt, closers)
        except BaseException:
            _close_quietly(closers)
            raise
        finally:
            if lock is not None:
                lock.release()


def _close_quietly(closers: list[Any]) -> None:
    """After an error: let the checkpoint write in flight end (committed or
    failed) and close the writers before the lock is released; their own
    errors (a full disk again) are logged, the original error is raised."""
    for close in closers:
        try:
            close()
        except Exception as e:
            log.warning("while stopping after an error: %s: %s", type(e).__name__, e)


def _train_and_evaluate(spec: RunSpec, workdir: str, preempt: Preemption,
                        closers: list[Any]) -> dict[str, Any]:
    workdir_path = Path(workdir)
    is_main = jax.process_index() == 0
    mesh = setup_lib.run_mesh(spec)
    cache = enable_compilation_cache(spec.train.compilation_cache, workdir)
    if cache is not None and is_main:
        print(f"persistent compilation cache: {cache}", flush=True)
    # Before any data is read: a resume with a changed config is refused here.
    if (changed := run_config.start_training(workdir, spec)) and is_main:
        print(f"resuming with a changed config: {run_config.changes_text(changed)}", flush=True)

    # ---- input
    t0 = time.perf_counter()
    splits = tuple(s for s in dict.fromkeys((*spec.eval.splits, spec.eval.final_split)) if s)
    config = setup_lib.model_config(spec)
    bundle = load_data(spec.data, splits, model_vocab=config.vocab_size)
    if is_main:
        print(bundle.report.format("training data"), flush=True)
    iterator = make_iterator(spec.data, bundle.train_features, batch_size=spec.train.batch_size)
    tasks = task_names(bundle.teachers)
    total = train_steps(spec.train, iterator)
    log.info("data ready in %.1fs: %d training pairs, rows %dx%d", time.perf_counter() - t0,
             len(bundle.train_features), iterator.input_len, iterator.target_len)
    if is_main and spec.train.epochs:
        print(f"{spec.train.epochs:g} epochs of {iterator.batches_in_epoch(0)} batches: "
              f"{total} steps", flush=True)

    # ---- model, optimizer, sharded state, step
    built = setup_lib.build(spec, mesh, total_steps=total, model=config)
    setup_lib.memory_report(built, batch_size=spec.train.batch_size,
                            input_len=iterator.input_len, target_len=iterator.target_len)
    meta = setup_lib.run_meta(spec, config, bundle.tokenizer.vocab_size)
    abstract = built.abstract_state
    train = spec.train

    # ---- checkpoint / resume
    ckpt = ckpt_lib.Checkpointer(
        workdir, keep=train.keep_checkpoints, keep_best=train.keep_best,
        async_save=train.async_checkpoints,
    )
    closers.append(ckpt.close)
    # The newest intact checkpoint; damaged newer ones are named in a warning
    # and moved aside, since this run writes those step numbers again.
    resumed = ckpt.restore_intact(abstract, expected_meta=meta, move_damaged=True)
    if resumed is not None:
        start, state, data_state = resumed.step, resumed.state, resumed.data
        iterator.set_state(data_state)
        if is_main:
            print(f"resumed from {ckpt.directory / str(start)} (iterator {data_state})", flush=True)
    else:
        state = setup_lib.create_state(built)
        start = 0

    nonfinite_at_start = int(jax.device_get(state.nonfinite))

    first = next(iterator)
    compiled, compile_s = setup_lib.compile_step(built, setup_lib.device_batch(built, first),
                                                 state)
    if is_main:
        print(f"train step compiled in {compile_s:.1f}s; mesh {dict(mesh.shape)}; "
              f"{iterator.batch_size} rows of {iterator.input_len}+{iterator.target_len} tokens",
              flush=True)

    # ---- evals
    writer = metrics_lib.MetricWriter(workdir, sinks=tracking.metric_sinks(spec, workdir))
    closers.append(writer.close)
    writer.write_text("config", run_config.config_text(spec), start)
    history: dict[str, Any] = {"best_val_accuracy": None, "best_step": None}

    def evaluate_now(step: int) -> dict[str, dict[str, float]]:
        results = {}
        for split in spec.eval.splits:
            m, _ = evaluate_run_split(spec, config, state.params, bundle, split, mesh)
            writer.write(step, m, kind=f"eval/{split}")
            results[split] = m
            if is_main:
                progress_lib.echo(f"step {step}: {split} {accuracy_text(m)}")
        return results

    def save(step: int, evals: dict[str, dict[str, float]] | None, force: bool = False) -> None:
        metrics = None
        if evals and "valid" in evals:
            acc = evals["valid"][spec.eval.best_metric]
            metrics = {"val_accuracy": acc}
            if history["best_val_accuracy"] is None or acc > history["best_val_accuracy"]:
                history.update(best_val_accuracy=acc, best_step=step)
        ckpt.save(step, state, iterator.get_state(), meta, metrics=metrics, force=force)

    # ---- loop
    # A plain line at every log_every (interval 0): the log's cadence is the config's.
    profiler = tracking.StepProfiler(train.profile_steps, workdir)
    closers.append(profiler.close)
    progress = progress_lib.Progress(total, initial=start, unit="step", desc="train",
                                     enabled=train.progress_bar, interval_s=0)
    pending: list[dict[str, Any]] = []
    counts = np.zeros(2)
    t_log, t_train = time.perf_counter(), time.perf_counter()
    last_saved = start
    batch = first
    step = start
    status = "completed"
    stop = StopAgreement(preempt, train.preemption_sync_every)
    with preempt.saving():
        while step < total:
            if step > start:
                batch = next(iterator)
            counts += _batch_stats(batch)
            profiler.before(step + 1)
            state, m = compiled(state, setup_lib.device_batch(built, batch))
            pending.append(m)
            step += 1
            profiler.after(step, state)
            if step % train.log_every == 0 or step == total:
                fetched = jax.device_get(pending)
                pending = []
                elapsed = time.perf_counter() - t_log
                n = len(fetched)
                scalars = {
                    "loss": float(np.mean([f["loss"] for f in fetched])),
                    "grad_norm": float(np.mean([f["grad_norm"] for f in fetched])),
                    "step_time_s": elapsed / n,
                    "examples_per_s": counts[0] * jax.process_count() / elapsed,
                    "tokens_per_s": counts[1] * jax.process_count() / elapsed,
                    "nonfinite_total": float(fetched[-1]["nonfinite_total"]),
                }
                if "lr" in fetched[-1]:
                    scalars["lr"] = float(fetched[-1]["lr"])
                per_task = np.mean([f["per_task_ce"] for f in fetched], axis=0)
                for name, v in zip(tasks, per_task):
                    scalars[f"loss/{name}"] = float(v)
                writer.write(step, scalars)
                progress.update(to=step, text=" ".join(
                    [f"loss {scalars['loss']:.3f}"]
                    + [f"{t} {scalars['loss/' + t]:.3f}" for t in tasks]
                    + [f"{scalars['examples_per_s']:.1f} ex/s"]
                ))
                counts[:] = 0
                t_log = time.perf_counter()
                # The counter lives in the state and survives resumes: only
                # updates skipped since this run started count against "stop".
                bad = int(scalars["nonfinite_total"]) - nonfinite_at_start
                if bad and train.nonfinite == "stop":
                    ckpt.wait()
                    # Named only after reading it back against its checksums:
                    # the newest save may itself be damaged.
                    intact = ckpt.last_intact_step(abstract, meta)
                    good = ("none (no checkpoint reads back intact)" if intact is None else
                            f"{ckpt.step_dir(intact)}. It was read back just now: its files, "
                            "data position and array checksums (where recorded) are intact")
                    raise NonFiniteError(
                        f"non-finite loss or gradients by step {step} ({bad} update(s) skipped; "
                        f"parameters were not changed by them). Last good checkpoint: {good}. "
                        "Lower the learning rate, enable clipping, or set "
                        "config.train.nonfinite='skip' to skip such updates."
                    )
            evals = None
            if train.eval_every and (step % train.eval_every == 0 or step == total):
                evals = evaluate_now(step)
            if step % train.checkpoint_every == 0 or step == total or evals:
                save(step, evals)
                last_saved = step
            if stop.should_stop(step):
                if last_saved != step:
                    save(step, None, force=True)
                status = "interrupted" if preempt.reason == "SIGINT" else "preempted"
                break
        # Still inside: a Ctrl-C while the last write ends must not cut it.
        ckpt.wait()
    if status == "completed" and preempt.requested:
        status = "interrupted" if preempt.reason == "SIGINT" else "preempted"
    progress.close()
    profiler.close()
    train_s = time.perf_counter() - t_train

    # ---- final report on the best checkpoint
    summary: dict[str, Any] = {
        "status": status, "step": step, "compile_s": compile_s, "train_s": train_s,
        "best_step": history["best_step"], "best_val_accuracy": history["best_val_accuracy"],
        "teachers": list(bundle.teachers), "model": dataclasses.asdict(config),
        "dataset": spec.data.name, "workdir": str(workdir_path.absolute()),
    }
    if status == "completed" and spec.eval.final_split:
        split = spec.eval.final_split
        best = ckpt.best_step()
        params = state.params
        if best is not None and best != step:
            # Falls back to the newest intact step if the best one is damaged.
            restored = ckpt.restore_intact(abstract, expected_meta=meta, prefer=best)
            best, params = restored.step, restored.state.params
        m, rows = evaluate_run_split(spec, config, params, bundle, split, mesh)
        write_predictions(workdir_path / f"predictions_{split}.jsonl", rows)
        writer.write(step, m, kind=f"final/{split}")
        summary.update({f"{split}_{k}": v for k, v in m.items()})
        summary["evaluated_step"] = best if best is not None else step
        if is_main:
            print(f"final {split}: {accuracy_text(m)} on {int(m['examples'])} examples "
                  f"(checkpoint step {summary['evaluated_step']})", flush=True)
    ckpt.close()
    writer.close()
    if is_main:
        write_json_atomic(workdir_path / "summary.json", summary)
        if train.plot:
            metrics_lib.plot_run(workdir_path)
    return summary
