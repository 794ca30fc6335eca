"""--mode=eval: score a split with the best (or latest) intact checkpoint of a workdir."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax

from tinyllm_jax import checkpoint as ckpt_lib
from tinyllm_jax import evaluate as eval_lib
from tinyllm_jax import setup as setup_lib
from tinyllm_jax.atomic import write_json_atomic
from tinyllm_jax.data.bundle import load_data
from tinyllm_jax.optim import make_optimizer
from tinyllm_jax.spec import parse
from tinyllm_jax.train import _accuracy_text, run_eval, write_predictions


def evaluate_workdir(
    config: Any, workdir: str, split: str | None = None, which: str = "best"
) -> dict[str, Any]:
    """Restore the best (or latest) checkpoint and score a split."""
    spec = parse(config)
    workdir_path = Path(workdir)
    split = split or spec.eval.final_split
    mesh = setup_lib.run_mesh(spec, train=False)
    model = setup_lib.model_config(spec)
    bundle = load_data(spec.data, (split,), model_vocab=model.vocab_size, train=False)
    tx, _ = make_optimizer(spec.optimizer, spec.train.steps)
    abstract, _ = setup_lib.state_shardings(model, tx, mesh)
    meta = setup_lib.run_meta(spec, model, bundle.tokenizer.vocab_size)
    ckpt = ckpt_lib.Checkpointer(workdir, async_save=False)
    try:
        best = ckpt.best_step() if which == "best" else None
        restored = ckpt.restore_intact(abstract, expected_meta=meta, prefer=best)
        if restored is None:
            raise FileNotFoundError(f"{ckpt.directory}: no checkpoint to evaluate")
        step, state = restored.step, restored.state
    finally:
        ckpt.close()
    m, rows = run_eval(spec, model, state.params, bundle, split, mesh)
    if spec.eval.rationales and bundle.teachers:
        by_id = {r["id"]: r for r in rows}
        for teacher, prefix in zip(bundle.teachers, spec.data.teacher_prefixes):
            texts = eval_lib.generate_rationales(
                state.params, model.replace(dropout_rate=0.0), bundle.eval_examples[split],
                prefix=prefix, tokenizer=bundle.tokenizer, mesh=mesh,
                batch_size=spec.eval.batch_size, max_input_len=spec.data.max_input_len,
                max_new_tokens=spec.data.max_target_len,
            )
            for ex_id, text in texts.items():
                if ex_id in by_id:
                    by_id[ex_id][f"rationale_{teacher}"] = text
    write_predictions(workdir_path / f"predictions_{split}.jsonl", rows)
    result = {"split": split, "step": step, **m}
    if jax.process_index() == 0:
        print(f"{split}: {_accuracy_text(m)} on {int(m['examples'])} examples at checkpoint "
              f"step {step}", flush=True)
        write_json_atomic(workdir_path / f"eval_{split}.json", result)
    return result
