"""Ablations on the synthetic task (docs/results.md): which rationales help?

    python -m tinyllm_jax.main --config=configs/experiments/synthetic.py:method=both,seed=0 \\
        --workdir=runs/experiments/synthetic-both-s0

Args: method=answer|algebra|verbal|both|both_filtered, seed=N (model init and
data order; the dataset itself is fixed), fraction=F (share of the training
split), alpha=A (weight of every rationale task), epochs=E (passes over the
training examples, default 3), steps=N (a fixed step count instead of epochs),
mode=multitask|rationale_then_answer (config.data.student_mode: the answer and
one rationale task per teacher, or one target "<rationale> So the answer is:
<answer>" per teacher rationale, decoded up to max_target_len tokens at eval),
train_size=N (training problems, default the demo's 4,000), size=mini|tiny (the
student, default the demo's mini).

Every method sees each training example `epochs` times. A packed row holds
several (input, target) pairs, so methods with more tasks per example take
more steps for the same epochs; `steps=N` gives the equal-compute view.
experiments/run_grid.py runs the grids; experiments/report.py tabulates them.
"""

from tinyllm_jax.configs import load_config_file, parse_arg

METHODS = {
    "answer": (),
    "algebra": ("algebra",),
    "verbal": ("verbal",),
    "both": ("algebra", "verbal"),
    "both_filtered": ("algebra", "verbal"),
}


def get_config(arg: str | None = None):
    from pathlib import Path

    a = parse_arg(arg, method="both", seed=0, fraction=1.0, alpha=1.0, epochs=3.0, steps=0,
                  mode="multitask", train_size=0, size="mini")
    if a["method"] not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {a['method']!r}")
    teachers = METHODS[a["method"]]
    c = load_config_file(Path(__file__).parents[1] / "demo.py",
                         f"teachers={'+'.join(teachers) or 'none'},size={a['size']}")
    c.seed = a["seed"]
    c.data.seed = a["seed"]
    c.data.train_fraction = a["fraction"]
    c.data.drop_disagreeing = a["method"] == "both_filtered"
    c.loss.rationale_weights = (a["alpha"],) * len(teachers)
    c.data.student_mode = a["mode"]
    if a["mode"] == "rationale_then_answer":
        c.train.eval_max_new_tokens = 0  # rationale + answer: up to max_target_len
    if a["train_size"]:
        c.data.synthetic.train_size = a["train_size"]
    c.train.steps = a["steps"]
    c.train.epochs = 0.0 if a["steps"] else a["epochs"]
    # Validation every 100 steps gives the learning curves; the checkpoint at
    # the last step (always written) is all a grid run needs.
    c.train.eval_every = 100
    c.train.checkpoint_every = 1_000_000
    c.train.plot = False
    c.train.progress_bar = False
    return c
