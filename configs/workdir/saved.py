"""The config a training run saved in its workdir, to change a field at --mode=eval.

    python -m tinyllm_jax.main --mode=eval --workdir=W \
        --config=configs/workdir/saved.py:W --config.train.eval_batch_size=8

(`--mode=eval --workdir=W` alone uses the saved config as it is.)
"""

from tinyllm_jax.run_config import read_saved_config


def get_config(arg: str | None = None):
    if not arg:
        raise ValueError("configs/workdir/saved.py needs the workdir: --config=configs/workdir/saved.py:WORKDIR")
    cfg = read_saved_config(arg)
    if cfg is None:
        raise ValueError(f"{arg}: no config.json there (training writes it at start)")
    return cfg
