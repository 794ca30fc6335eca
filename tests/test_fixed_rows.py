"""Training steps a fixed packed-row count: one compiled program for every step.

The iterator fills `config.train.batch_size` rows per step and completes an
epoch's last, short batch with empty rows, so a full epoch (and the step into
the next one) never changes the step's shapes and never recompiles it.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from tinyllm_jax import setup as setup_lib
from tinyllm_jax.configs import load_config_file
from tinyllm_jax.data.bundle import load_data
from tinyllm_jax.data.pipeline import make_iterator
from tinyllm_jax.sharding import make_mesh
from tinyllm_jax.spec import parse

REPO = Path(__file__).resolve().parents[1]


def test_a_full_epoch_with_a_short_last_batch_compiles_the_step_once():
    cfg = load_config_file(REPO / "configs" / "tiny.py")
    cfg.model.num_layers = 1
    cfg.model.num_decoder_layers = 1
    cfg.data.synthetic.train_size = 24
    cfg.train.batch_size = 4
    spec = parse(cfg)
    config = setup_lib.model_config(spec)
    bundle = load_data(spec.data, (), model_vocab=config.vocab_size)
    iterator = make_iterator(spec.data, bundle.train_features, batch_size=spec.train.batch_size)
    rows = len(iterator.epoch_rows(0))
    batches = iterator.batches_in_epoch(0)
    # The case under test: the epoch's rows do not divide into whole batches.
    assert rows % spec.train.batch_size, f"{rows} rows fill whole batches of 4; pick another size"

    built = setup_lib.build(spec, make_mesh(spec.mesh, jax.devices()[:1]), total_steps=batches + 1,
                            model=config)
    state = setup_lib.create_state(built)
    shapes, real_rows = set(), []
    for _ in range(batches + 1):  # the whole epoch and the first step of the next
        batch = next(iterator)
        shapes.add(tuple(sorted((k, v.shape) for k, v in batch.items())))
        real_rows.append(int(np.sum(batch["decoder_segment_ids"].max(axis=1) > 0)))
        state, metrics = built.step(state, setup_lib.device_batch(built, batch))
    jax.block_until_ready(metrics["loss"])
    assert iterator.get_state()["epoch"] == 1
    assert real_rows[batches - 1] == rows % spec.train.batch_size  # the short batch, padded
    assert len(shapes) == 1
    assert built.step._cache_size() == 1  # one program over the epoch boundary
