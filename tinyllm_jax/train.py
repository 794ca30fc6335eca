"""Training and evaluation loop, in big_vision-style banner sections.

    train_and_evaluate(config, workdir)   # --mode=train
    evaluate_workdir(config, workdir)     # --mode=eval

The same code runs on one CPU or a pod: the mesh comes from `config.mesh`,
every host feeds its own rows, and Orbax writes checkpoints collectively.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import linen as nn

from tinyllm_jax import checkpoint as ckpt_lib
from tinyllm_jax import memory as memory_lib
from tinyllm_jax import metrics as metrics_lib
from tinyllm_jax import sharding as shard_lib
from tinyllm_jax.atomic import write_json_atomic
from tinyllm_jax.configs import to_t5_config
from tinyllm_jax.data import pipeline
from tinyllm_jax.data.features import ANSWER_TASK, task_names, teacher_prefixes_for
from tinyllm_jax.evaluation.predictions import write_predictions
from tinyllm_jax.evaluation.scoring import accuracy_text
from tinyllm_jax.evaluation.split import evaluate_split, generate_rationales, max_new_tokens_for
from tinyllm_jax.models.t5 import T5Config, abstract_params
from tinyllm_jax.optim import make_optimizer
from tinyllm_jax.train_step import (
    STEP_KEYS,
    TrainState,
    init_state,
    make_train_step,
    state_from_params,
    task_coefficients,
)

log = logging.getLogger(__name__)


class NonFiniteError(RuntimeError):
    """Loss or gradients were NaN/inf and config.train.nonfinite == 'stop'."""


@dataclasses.dataclass
class DataBundle:
    tokenizer: Any
    train_features: list
    eval_features: dict[str, list]
    eval_examples: dict[str, list]
    teachers: tuple[str, ...]
    report: Any


# --- input --------------------------------------------------------------------


def load_data(cfg: Any, splits: tuple[str, ...], train: bool = True) -> DataBundle:
    data_cfg = cfg.data
    teachers = pipeline._teachers(data_cfg)
    tokenizer = pipeline.tokenizer_for(data_cfg)
    if tokenizer.vocab_size > cfg.model.vocab_size:
        raise ValueError(
            f"tokenizer {data_cfg.tokenizer!r} has {tokenizer.vocab_size} ids but "
            f"config.model.vocab_size is {cfg.model.vocab_size}; raise the model vocabulary"
        )
    report = None
    train_features: list = []
    if train:
        # load_examples applies config.data.train_fraction to the train split.
        examples, report = pipeline.load_examples(data_cfg, "train")
        train_features, freport = pipeline.build_features(data_cfg, examples, tokenizer)
        report.merge(freport)
    eval_features, eval_examples = {}, {}
    for split in splits:
        examples, _ = pipeline.load_examples(data_cfg, split)
        feats, _ = pipeline.build_features(data_cfg, examples, tokenizer, tasks=(ANSWER_TASK,))
        eval_features[split], eval_examples[split] = feats, examples
    return DataBundle(tokenizer, train_features, eval_features, eval_examples, teachers, report)


# --- model and state ------------------------------------------------------------


def model_config(cfg: Any) -> T5Config:
    if cfg.init_from:
        from tinyllm_jax.models.hf import load_hf_config

        hf = load_hf_config(cfg.init_from)
        runtime = {k: cfg.model[k] for k in ("dtype", "remat", "scan_layers", "dropout_rate")}
        return hf.replace(**runtime)
    return to_t5_config(cfg.model)


def state_shardings(config: T5Config, tx: Any, mesh: Any) -> tuple[Any, Any]:
    """(abstract state, shardings) without allocating anything."""
    boxed = abstract_params(config)
    param_sh = shard_lib.logical_to_sharding(boxed, mesh)
    abstract = jax.eval_shape(lambda: init_state(config, tx, 0))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    opt_sh = shard_lib.like_params_sharding(abstract.opt_state, abstract.params, param_sh, mesh)
    shardings = TrainState(
        step=replicated, params=param_sh, opt_state=opt_sh, rng=replicated, nonfinite=replicated
    )
    abstract = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )
    return abstract, shardings


def _global_from_host(tree: Any, shardings: Any) -> Any:
    return jax.tree.map(
        lambda x, s: jax.make_array_from_callback(np.shape(x), s, lambda idx: np.asarray(x)[idx]),
        tree, shardings,
    )


def create_state(cfg: Any, config: T5Config, tx: Any, mesh: Any, shardings: Any) -> TrainState:
    if cfg.init_from:
        from tinyllm_jax.models.hf import load_hf_checkpoint

        _, params = load_hf_checkpoint(cfg.init_from)
        params = _global_from_host(params, shardings.params)
        fn = jax.jit(lambda p: state_from_params(p, tx, cfg.seed), out_shardings=shardings)
        return fn(params)
    fn = jax.jit(lambda: init_state(config, tx, cfg.seed), out_shardings=shardings)
    return fn()


# --- evaluation -------------------------------------------------------------------


def run_eval(
    cfg: Any, config: T5Config, params: Any, bundle: DataBundle, split: str, mesh: Any,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    examples = bundle.eval_examples[split]
    return evaluate_split(
        params, config, bundle.eval_features[split], examples, bundle.tokenizer, mesh,
        batch_size=int(cfg.train.eval_batch_size),
        max_new_tokens=max_new_tokens_for(
            examples, bundle.tokenizer, int(cfg.train.eval_max_new_tokens)),
        by_length=bool(cfg.train.get("eval_by_length", True)), rank=bool(cfg.train.rank_choices),
    )


# --- preemption ---------------------------------------------------------------------


class _Preemption:
    """SIGTERM (TPU/spot preemption) asks the loop to save and stop cleanly.

    Held for the whole run, since a notice can come while data loads or the
    step compiles; entering it again (the loop does) is a no-op."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None
        self._depth = 0

    def __enter__(self) -> _Preemption:
        self._depth += 1
        if self._depth > 1:
            return self
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread (e.g. inside a test runner thread)
            self._previous = None
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        log.warning("SIGTERM received: saving a checkpoint and stopping")
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        self._depth -= 1
        if self._depth == 0 and self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def train_steps(train_cfg: Any, iterator: pipeline.BatchIterator) -> int:
    """Optimizer steps of the run: `train.steps`, or `train.epochs` passes over the rows."""
    epochs = float(train_cfg.get("epochs", 0.0) or 0.0)
    if epochs < 0:
        raise ValueError(f"config.train.epochs must be >= 0 (0 = use train.steps), got {epochs}")
    if not epochs:
        steps = int(train_cfg.steps)
    else:
        # Epoch 0's row count stands for every epoch: packing the other
        # permutations changes it by a row or two at most.
        steps = int(np.ceil(epochs * iterator.batches_in_epoch(0)))
    if steps < 1:
        raise ValueError(f"the run has no training steps (train.steps={train_cfg.steps}, "
                         f"train.epochs={epochs})")
    return steps


def _batch_stats(batch: dict[str, np.ndarray]) -> tuple[int, int]:
    """(answer-task examples, real tokens) in this host's rows."""
    starts = (batch["decoder_positions"] == 0) & (batch["decoder_segment_ids"] > 0)
    examples = int(np.sum(starts & (batch["decoder_task_ids"] == ANSWER_TASK)))
    tokens = int(np.sum(batch["encoder_segment_ids"] > 0) + np.sum(batch["decoder_segment_ids"] > 0))
    return examples, tokens


# --- the loop -----------------------------------------------------------------------


def train_and_evaluate(cfg: Any, workdir: str) -> dict[str, Any]:
    # Before anything slow: a SIGTERM during start-up then makes the loop run
    # one step, save and exit 0 instead of killing the process.
    with _Preemption() as preempt:
        return _train_and_evaluate(cfg, workdir, preempt)


def _train_and_evaluate(cfg: Any, workdir: str, preempt: _Preemption) -> dict[str, Any]:
    if cfg.train.nonfinite not in ("stop", "skip"):
        raise ValueError(f"config.train.nonfinite must be 'stop' or 'skip', got {cfg.train.nonfinite!r}")
    workdir_path = Path(workdir)
    workdir_path.mkdir(parents=True, exist_ok=True)
    is_main = jax.process_index() == 0

    # ---- mesh
    mesh = shard_lib.make_mesh(cfg.mesh)
    if cfg.train.batch_size % shard_lib.batch_divisor(mesh):
        raise ValueError(
            f"config.train.batch_size={cfg.train.batch_size} must be divisible by the "
            f"data*fsdp mesh size {shard_lib.batch_divisor(mesh)}"
        )
    if cfg.train.eval_batch_size % shard_lib.batch_divisor(mesh):
        raise ValueError(
            f"config.train.eval_batch_size={cfg.train.eval_batch_size} must be divisible by "
            f"the data*fsdp mesh size {shard_lib.batch_divisor(mesh)}"
        )

    # ---- input
    t0 = time.perf_counter()
    splits = tuple(dict.fromkeys((*cfg.train.eval_splits, cfg.train.final_eval_split)))
    splits = tuple(s for s in splits if s)
    bundle = load_data(cfg, splits)
    if is_main:
        print(bundle.report.format("training data"), flush=True)
    iterator = pipeline.make_iterator(cfg.data, bundle.train_features, batch_size=cfg.train.batch_size)
    tasks = task_names(bundle.teachers)
    total = train_steps(cfg.train, iterator)
    log.info("data ready in %.1fs: %d training pairs, rows %dx%d", time.perf_counter() - t0,
             len(bundle.train_features), iterator.input_len, iterator.target_len)
    if is_main and cfg.train.get("epochs", 0.0):
        print(f"{cfg.train.epochs:g} epochs of {iterator.batches_in_epoch(0)} batches: "
              f"{total} steps", flush=True)

    # ---- model, optimizer, sharded state
    config = model_config(cfg)
    tx, sched = make_optimizer(cfg.optimizer, total)
    abstract, shardings = state_shardings(config, tx, mesh)
    # Parameter table and memory estimate; fails here, before any allocation,
    # when a dimension does not divide its mesh axes or the step cannot fit.
    memory_lib.report(
        config, abstract, shardings, mesh, batch_size=int(cfg.train.batch_size),
        input_len=iterator.input_len, target_len=iterator.target_len,
        accumulate_steps=int(cfg.optimizer.accumulate_steps),
    )
    coefs = task_coefficients(cfg.loss.answer_weight, cfg.loss.rationale_weights, len(bundle.teachers))
    meta = ckpt_lib.run_meta(
        config, teachers=bundle.teachers, tokenizer=str(cfg.data.tokenizer),
        dataset=str(cfg.data.name), vocab=bundle.tokenizer.vocab_size,
    )

    # ---- checkpoint / resume
    ckpt = ckpt_lib.Checkpointer(
        workdir, keep=cfg.train.keep_checkpoints, keep_best=cfg.train.keep_best,
        async_save=cfg.train.async_checkpoints,
    )
    # The newest intact checkpoint; damaged newer ones are named in a warning
    # and moved aside, since this run writes those step numbers again.
    resumed = ckpt.restore_intact(abstract, expected_meta=meta, move_damaged=True)
    if resumed is not None:
        start, state, data_state = resumed.step, resumed.state, resumed.data
        iterator.set_state(data_state)
        if is_main:
            print(f"resumed from {ckpt.directory / str(start)} (iterator {data_state})", flush=True)
    else:
        state = create_state(cfg, config, tx, mesh, shardings)
        start = 0

    nonfinite_at_start = int(jax.device_get(state.nonfinite))

    # ---- step
    step_fn = make_train_step(
        config, tx, coefs, z_loss=cfg.loss.z_loss, label_smoothing=cfg.loss.label_smoothing,
        accumulate_steps=int(cfg.optimizer.accumulate_steps), schedule=sched,
    )
    batch_sh = shard_lib.batch_sharding(mesh)
    jitted = jax.jit(
        step_fn, in_shardings=(shardings, {k: batch_sh for k in STEP_KEYS}),
        out_shardings=(shardings, None), donate_argnums=(0,),
    )
    first = next(iterator)
    t_compile = time.perf_counter()
    with jax.set_mesh(mesh), nn.logical_axis_rules(shard_lib.LOGICAL_RULES):
        compiled = jitted.lower(state, shard_lib.global_batch(
            {k: first[k] for k in STEP_KEYS}, mesh)).compile()
    compile_s = time.perf_counter() - t_compile
    if is_main:
        print(f"train step compiled in {compile_s:.1f}s; mesh {dict(mesh.shape)}; "
              f"{iterator.batch_size} rows of {iterator.input_len}+{iterator.target_len} tokens",
              flush=True)

    # ---- evals
    writer = metrics_lib.MetricWriter(workdir)
    history: dict[str, Any] = {"best_val_accuracy": None, "best_step": None}

    def evaluate_now(step: int) -> dict[str, float]:
        results = {}
        for split in cfg.train.eval_splits:
            m, _ = run_eval(cfg, config, state.params, bundle, split, mesh)
            writer.write(step, m, kind=f"eval/{split}")
            results[split] = m
            if is_main:
                print(f"step {step}: {split} {accuracy_text(m)}", flush=True)
        return results

    def save(step: int, evals: dict[str, dict[str, float]] | None, force: bool = False) -> None:
        metrics = None
        if evals and "valid" in evals:
            acc = evals["valid"][cfg.train.best_metric]
            metrics = {"val_accuracy": acc}
            if history["best_val_accuracy"] is None or acc > history["best_val_accuracy"]:
                history.update(best_val_accuracy=acc, best_step=step)
        ckpt.save(step, state, iterator.get_state(), meta, metrics=metrics, force=force)

    # ---- loop
    progress = metrics_lib.Progress(total, start, bool(cfg.train.progress_bar))
    pending: list[dict[str, Any]] = []
    counts = np.zeros(2)
    t_log, t_train = time.perf_counter(), time.perf_counter()
    last_saved = start
    batch = first
    step = start
    status = "completed"
    with preempt:
        while step < total:
            if step > start:
                batch = next(iterator)
            counts += _batch_stats(batch)
            state, m = compiled(state, shard_lib.global_batch({k: batch[k] for k in STEP_KEYS}, mesh))
            pending.append(m)
            step += 1
            if step % cfg.train.log_every == 0 or step == total:
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
                progress.update(step, " ".join(
                    [f"loss {scalars['loss']:.3f}"]
                    + [f"{t} {scalars['loss/' + t]:.3f}" for t in tasks]
                    + [f"{scalars['examples_per_s']:.1f} ex/s"]
                ))
                counts[:] = 0
                t_log = time.perf_counter()
                # The counter lives in the state and survives resumes: only
                # updates skipped since this run started count against "stop".
                bad = int(scalars["nonfinite_total"]) - nonfinite_at_start
                if bad and cfg.train.nonfinite == "stop":
                    ckpt.wait()
                    raise NonFiniteError(
                        f"non-finite loss or gradients by step {step} ({bad} update(s) skipped; "
                        f"parameters were not changed by them). Last good checkpoint: "
                        f"{ckpt.directory / str(last_saved) if ckpt.latest_step() else 'none'}. "
                        "Lower the learning rate, enable clipping, or set "
                        "config.train.nonfinite='skip' to skip such updates."
                    )
            evals = None
            if cfg.train.eval_every and (step % cfg.train.eval_every == 0 or step == total):
                evals = evaluate_now(step)
            if step % cfg.train.checkpoint_every == 0 or step == total or evals:
                save(step, evals)
                last_saved = step
            if preempt.requested:
                if last_saved != step:
                    save(step, None, force=True)
                status = "preempted"
                break
    ckpt.wait()
    progress.close()
    train_s = time.perf_counter() - t_train

    # ---- final report on the best checkpoint
    summary: dict[str, Any] = {
        "status": status, "step": step, "compile_s": compile_s, "train_s": train_s,
        "best_step": history["best_step"], "best_val_accuracy": history["best_val_accuracy"],
        "teachers": list(bundle.teachers), "model": dataclasses.asdict(config),
        "dataset": cfg.data.name, "workdir": str(workdir_path.absolute()),
    }
    if status == "completed" and cfg.train.final_eval_split:
        split = cfg.train.final_eval_split
        best = ckpt.best_step()
        params = state.params
        if best is not None and best != step:
            # Falls back to the newest intact step if the best one is damaged.
            restored = ckpt.restore_intact(abstract, expected_meta=meta, prefer=best)
            best, params = restored.step, restored.state.params
        m, rows = run_eval(cfg, config, params, bundle, split, mesh)
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
        if cfg.train.plot:
            metrics_lib.plot_run(workdir_path)
    return summary


def evaluate_workdir(
    cfg: Any, workdir: str, split: str | None = None, which: str = "best"
) -> dict[str, Any]:
    """--mode=eval: restore the best (or latest) checkpoint and score a split."""
    workdir_path = Path(workdir)
    split = split or cfg.train.final_eval_split
    mesh = shard_lib.make_mesh(cfg.mesh)
    bundle = load_data(cfg, (split,), train=False)
    config = model_config(cfg)
    tx, _ = make_optimizer(cfg.optimizer, int(cfg.train.steps))
    abstract, _ = state_shardings(config, tx, mesh)
    meta = ckpt_lib.run_meta(
        config, teachers=bundle.teachers, tokenizer=str(cfg.data.tokenizer),
        dataset=str(cfg.data.name), vocab=bundle.tokenizer.vocab_size,
    )
    ckpt = ckpt_lib.Checkpointer(workdir, async_save=False)
    try:
        best = ckpt.best_step() if which == "best" else None
        restored = ckpt.restore_intact(abstract, expected_meta=meta, prefer=best)
        if restored is None:
            raise FileNotFoundError(f"{ckpt.directory}: no checkpoint to evaluate")
        step, state = restored.step, restored.state
    finally:
        ckpt.close()
    m, rows = run_eval(cfg, config, state.params, bundle, split, mesh)
    if cfg.train.eval_rationales and bundle.teachers:
        prefixes = teacher_prefixes_for(
            bundle.teachers, tuple(cfg.data.teacher_prefixes) or None, cfg.data.answer_prefix
        )
        by_id = {r["id"]: r for r in rows}
        for teacher, prefix in zip(bundle.teachers, prefixes):
            texts = generate_rationales(
                state.params, config.replace(dropout_rate=0.0), bundle.eval_examples[split],
                prefix=prefix, tokenizer=bundle.tokenizer, mesh=mesh,
                batch_size=int(cfg.train.eval_batch_size), max_input_len=int(cfg.data.max_input_len),
                max_new_tokens=int(cfg.data.max_target_len),
            )
            for ex_id, text in texts.items():
                if ex_id in by_id:
                    by_id[ex_id][f"rationale_{teacher}"] = text
    write_predictions(workdir_path / f"predictions_{split}.jsonl", rows)
    result = {"split": split, "step": step, **m}
    if jax.process_index() == 0:
        print(f"{split}: {accuracy_text(m)} on {int(m['examples'])} examples at checkpoint "
              f"step {step}", flush=True)
        write_json_atomic(workdir_path / f"eval_{split}.json", result)
    return result
