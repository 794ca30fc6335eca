"""Evaluating a run: its splits during training, and a finished workdir (--mode=eval).

    metrics, rows = evaluate_run_split(spec, config, params, bundle, "valid", mesh)
    result = evaluate_workdir(spec, workdir, split="test", which="best")
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import jax

from tinyllm_jax import setup as setup_lib
from tinyllm_jax.atomic import write_json_atomic
from tinyllm_jax.checkpoint import CheckpointMismatchError, meta_differences
from tinyllm_jax.data.bundle import DataBundle, load_data
from tinyllm_jax.dirlock import holder_of
from tinyllm_jax.evaluation.decode_options import options_of
from tinyllm_jax.evaluation.predictions import write_predictions
from tinyllm_jax.evaluation.rationale_then_answer import evaluate_rationale_then_answer
from tinyllm_jax.evaluation.scoring import accuracy_text
from tinyllm_jax.evaluation.split import evaluate_split, generate_rationales, max_new_tokens_for
from tinyllm_jax.models.layer_stacking import to_layout
from tinyllm_jax.models.t5 import T5Config
from tinyllm_jax.preemption import Preemption
from tinyllm_jax.spec import RUNTIME_MODEL_FIELDS, RunSpec, parse
from tinyllm_jax.student import Student
from tinyllm_jax.workdir import check_existing_dir

log = logging.getLogger(__name__)

def evaluate_run_split(
    spec: RunSpec, config: T5Config, params: Any, bundle: DataBundle, split: str, mesh: Any,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """(metrics, prediction rows) of one of the bundle's eval splits, as the spec asks."""
    examples = bundle.eval_examples[split]
    if spec.data.student_mode == "rationale_then_answer":
        # The generation holds rationale + separator + answer: as long as a
        # training target may be, unless eval.max_new_tokens says otherwise.
        return evaluate_rationale_then_answer(
            params, config, bundle.eval_features[split], examples, bundle.tokenizer, mesh,
            batch_size=spec.eval.batch_size,
            max_new_tokens=spec.eval.max_new_tokens or spec.data.max_target_len,
            by_length=spec.eval.by_length, rank=spec.eval.rank_choices,
        )
    return evaluate_split(
        params, config, bundle.eval_features[split], examples, bundle.tokenizer, mesh,
        batch_size=spec.eval.batch_size,
        max_new_tokens=max_new_tokens_for(examples, bundle.tokenizer, spec.eval.max_new_tokens),
        by_length=spec.eval.by_length, rank=spec.eval.rank_choices,
        desc=f"eval {split}" if spec.train.progress_bar else None,
        options=options_of(spec.eval),
    )


def evaluate_workdir(
    config: Any, workdir: str, split: str | None = None, which: str = "best", *,
    abort_process: bool = False,
) -> dict[str, Any]:
    """Score `split` with the best (or latest) intact checkpoint of `workdir`;
    writes predictions_<split>.jsonl and eval_<split>.json there, each whole.

    Nothing is created when `workdir` is not a training workdir. A Ctrl-C
    raises KeyboardInterrupt (the files are written only at the end, so none
    is half-written); with `abort_process` a second one ends the process."""
    spec = parse(config)
    split = split or spec.eval.final_split
    outputs = (f"predictions_{split}.jsonl", f"eval_{split}.json")
    with Preemption(interrupts=True, sigterm=False, abort_process=abort_process,
                    stop_note="evaluation stopped by Ctrl-C; nothing was written"):
        workdir_path = check_existing_dir(workdir, files=outputs)
        if (holder := holder_of(workdir_path)) is not None:
            log.warning("%s is in use by a training run (%s): evaluating the checkpoints it "
                        "has written so far", workdir_path, holder.describe())
        return _evaluate_workdir(spec, workdir_path, split, which)


def _evaluate_workdir(spec: RunSpec, workdir_path: Path, split: str, which: str
                      ) -> dict[str, Any]:
    mesh = setup_lib.run_mesh(spec, train=False)
    # Parameters only: no optimizer state is built or read.
    student = Student.from_workdir(workdir_path, which=which)
    model = student.config.replace(**{k: getattr(spec.model, k) for k in RUNTIME_MODEL_FIELDS})
    bundle = load_data(spec.data, (split,), model_vocab=model.vocab_size, train=False)
    expected = setup_lib.run_meta(spec, setup_lib.model_config(spec), bundle.tokenizer.vocab_size)
    diffs = meta_differences(student.run_meta or {}, expected)
    if diffs:
        listing = "\n  ".join(diffs)
        raise CheckpointMismatchError(
            f"{workdir_path / 'checkpoints' / str(student.checkpoint_step)} was written by a "
            f"different configuration; refusing to evaluate it with this one:\n  {listing}")
    # The student is built unrolled; this run's config may ask for scanned layers.
    params, step = to_layout(student.params, model.scan_layers), student.checkpoint_step
    if jax.process_index() == 0:
        print(f"evaluating {split} ({len(bundle.eval_examples[split])} examples) with "
              f"{workdir_path / 'checkpoints' / str(step)}", flush=True)
    m, rows = evaluate_run_split(spec, model, params, bundle, split, mesh)
    if spec.eval.rationales and bundle.teachers:
        by_id = {r["id"]: r for r in rows}
        for teacher, prefix in zip(bundle.teachers, spec.data.teacher_prefixes):
            texts = generate_rationales(
                params, model, bundle.eval_examples[split], prefix=prefix,
                tokenizer=bundle.tokenizer, mesh=mesh, batch_size=spec.eval.batch_size,
                max_input_len=spec.data.max_input_len, max_new_tokens=spec.data.max_target_len,
                options=options_of(spec.eval),
            )
            for ex_id, text in texts.items():
                if ex_id in by_id:
                    by_id[ex_id][f"rationale_{teacher}"] = text
    write_predictions(workdir_path / f"predictions_{split}.jsonl", rows)
    # How the answers were decoded belongs with the accuracy it gave.
    result = {"split": split, "step": step, **m,
              "decoding": dataclasses.asdict(options_of(spec.eval))}
    if jax.process_index() == 0:
        print(f"{split}: {accuracy_text(m)} on {int(m['examples'])} examples at checkpoint "
              f"step {step}", flush=True)
        write_json_atomic(workdir_path / f"eval_{split}.json", result)
    return result
