"""Tiny end-to-end config for tests: a 2-layer T5 on a small synthetic set.

    python -m tinyllm_jax.main --config=configs/tiny.py --workdir=/tmp/tiny
"""

from tinyllm_jax.configs import base_config, parse_arg, split_teachers


def get_config(arg: str | None = None):
    a = parse_arg(arg, teachers="algebra+verbal", steps=8, packing=True)
    c = base_config(dataset="synthetic", teachers=split_teachers(a["teachers"]), size="tiny",
                    tokenizer="synthetic")
    c.data.synthetic.train_size = 64
    c.data.synthetic.valid_size = 16
    c.data.synthetic.test_size = 16
    c.data.max_input_len = 128
    c.data.max_target_len = 96
    c.data.packing = a["packing"]
    c.data.packed_input_len = 256
    c.data.packed_target_len = 128
    c.model.dropout_rate = 0.0
    c.optimizer.lr = 1e-3
    c.train.steps = a["steps"]
    c.train.batch_size = 8
    c.train.log_every = 2
    c.train.eval_every = 4
    c.train.checkpoint_every = 4
    c.train.eval_batch_size = 16
    c.train.eval_max_new_tokens = 8
    c.train.progress_bar = False
    c.train.plot = False
    return c
