"""Evaluating a run: its splits during training, and a finished workdir (--mode=eval).

    metrics, rows = evaluate_run_split(spec, config, params, bundle, "valid", mesh)
    result = evaluate_workdir(spec, workdir, split="test", which="best")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax

from tinyllm_jax import setup as setup_lib
from tinyllm_jax.atomic import write_json_atomic
from tinyllm_jax.checkpoint import CheckpointMismatchError, meta_differences
from tinyllm_jax.data.bundle import DataBundle, load_data
from tinyllm_jax.evaluation.predictions import write_predictions
from tinyllm_jax.evaluation.scoring import accuracy_text
from tinyllm_jax.evaluation.split import evaluate_split, generate_rationales, max_new_tokens_for
from tinyllm_jax.models.t5 import T5Config
from tinyllm_jax.spec import RUNTIME_MODEL_FIELDS, RunSpec, parse
from tinyllm_jax.student import Student


def evaluate_run_split(
    spec: RunSpec, config: T5Config, params: Any, bundle: DataBundle, split: str, mesh: Any,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """(metrics, prediction rows) of one of the bundle's eval splits, as the spec asks."""
    examples = bundle.eval_examples[split]
    return evaluate_split(
        params, config, bundle.eval_features[split], examples, bundle.tokenizer, mesh,
        batch_size=spec.eval.batch_size,
        max_new_tokens=max_new_tokens_for(examples, bundle.tokenizer, spec.eval.max_new_tokens),
        by_length=spec.eval.by_length, rank=spec.eval.rank_choices,
    )


def evaluate_workdir(
    config: Any, workdir: str, split: str | None = None, which: str = "best"
) -> dict[str, Any]:
    """Score `split` with the best (or latest) intact checkpoint of `workdir`;
    writes predictions_<split>.jsonl and eval_<split>.json there."""
    spec = parse(config)
    workdir_path = Path(workdir)
    split = split or spec.eval.final_split
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
    params, step = student.params, student.checkpoint_step
    m, rows = evaluate_run_split(spec, model, params, bundle, split, mesh)
    if spec.eval.rationales and bundle.teachers:
        by_id = {r["id"]: r for r in rows}
        for teacher, prefix in zip(bundle.teachers, spec.data.teacher_prefixes):
            texts = generate_rationales(
                params, model, bundle.eval_examples[split], prefix=prefix,
                tokenizer=bundle.tokenizer, mesh=mesh, batch_size=spec.eval.batch_size,
                max_input_len=spec.data.max_input_len, max_new_tokens=spec.data.max_target_len,
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
