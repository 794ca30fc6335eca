"""Ablations on the synthetic task (docs/results.md): which rationales help?

    python -m tinyllm_jax.main --config=configs/experiments/synthetic.py:method=both,seed=0 \\
        --workdir=runs/experiments/synthetic-both-s0

Args: method=answer|algebra|verbal|both|both_filtered, seed=N (model init and
data order; the dataset itself is fixed), fraction=F (share of the training
split), alpha=A (weight of every rationale task), steps=N.
experiments/run_grid.py runs the whole grid; experiments/report.py tabulates it.
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

    a = parse_arg(arg, method="both", seed=0, fraction=1.0, alpha=1.0, steps=300)
    if a["method"] not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {a['method']!r}")
    teachers = METHODS[a["method"]]
    c = load_config_file(Path(__file__).parents[1] / "demo.py",
                         f"teachers={'+'.join(teachers) or 'none'},steps={a['steps']}")
    c.seed = a["seed"]
    c.data.seed = a["seed"]
    c.data.train_fraction = a["fraction"]
    c.data.drop_disagreeing = a["method"] == "both_filtered"
    c.loss.rationale_weights = (a["alpha"],) * len(teachers)
    # Validation every 100 steps gives the learning curves; one checkpoint at
    # the end is all a grid run needs.
    c.train.eval_every = 100
    c.train.checkpoint_every = a["steps"]
    c.train.plot = False
    c.train.progress_bar = False
    return c
