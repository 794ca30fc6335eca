"""A from-scratch student on a real TinyLLM dataset (docs/results.md).

    python -m tinyllm_jax.main --config=configs/experiments/real.py:dataset=obqa,method=both,seed=0 \\
        --config.data.data_dir=../shared/data/tinyllm --workdir=runs/experiments/obqa-both-s0

Args: dataset=obqa|arc|riddle|piqa|pubmedqa, method=answer|flan|llama|both,
seed=N, steps=N. The student is the "mini" shape (3 layers, d_model 128)
with the T5 vocabulary, small enough for a CPU budget.
"""

from tinyllm_jax.configs import dataset_config, parse_arg

METHODS = {"answer": "none", "flan": "flan", "llama": "llama", "both": "flan+llama"}


def get_config(arg: str | None = None):
    a = parse_arg(arg, dataset="obqa", method="both", seed=0, steps=1500)
    if a["method"] not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {a['method']!r}")
    c = dataset_config(a["dataset"], f"size=mini,teachers={METHODS[a['method']]}",
                       default_teachers="flan+llama")
    c.seed = a["seed"]
    c.data.seed = a["seed"]
    c.data.max_input_len = 256
    c.data.max_target_len = 128
    c.model.dropout_rate = 0.1
    c.optimizer.lr = 1e-3
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_steps = 100
    c.train.steps = a["steps"]
    c.train.batch_size = 16
    c.train.log_every = 50
    c.train.eval_every = 500
    c.train.checkpoint_every = 500
    c.train.eval_batch_size = 100
    c.train.eval_max_new_tokens = 32
    c.train.best_metric = "accuracy_ranked"
    c.train.plot = False
    c.train.progress_bar = False
    return c
