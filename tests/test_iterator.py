"""The resumable, host-sharded batch iterator and the pipeline around it."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from tinyllm_jax.data import pipeline
from tinyllm_jax.data.features import build_task_features, feature_lengths
from tinyllm_jax.data.iterator import BatchIterator
from tinyllm_jax.data.packing import BATCH_KEYS
from tinyllm_jax.data.synthetic import SyntheticConfig, generate_split
from tinyllm_jax.spec import ConfigError, data_spec
from tinyllm_jax.tokenizers import ByteTokenizer

TEACHERS = ("algebra", "verbal")


@pytest.fixture(scope="module")
def feats():
    examples, _ = generate_split("test", SyntheticConfig(test_size=60))
    out, _ = build_task_features(examples, ByteTokenizer(), teachers=TEACHERS)
    return out


def _iterator(feats, **kw):
    args = dict(
        batch_size=4, input_len=512, target_len=192, seed=3, process_index=0, process_count=1
    )
    args.update(kw)
    return BatchIterator(feats, **args)


def _same(a, b):
    return sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_batches_have_the_contract_shapes(feats):
    batch = next(_iterator(feats))
    assert sorted(batch) == sorted(BATCH_KEYS)
    assert batch["encoder_input_tokens"].shape == (4, 512)
    assert batch["decoder_target_tokens"].shape == (4, 192)


def test_same_seed_same_batches_new_epoch_new_order(feats):
    it = _iterator(feats)
    n = it.batches_in_epoch(0)
    first = [next(it) for _ in range(n)]
    again = _iterator(feats)
    assert all(_same(a, next(again)) for a in first)
    assert not np.array_equal(it.epoch_order(0), it.epoch_order(1))
    assert it.get_state() == {"seed": 3, "epoch": 0, "position": n}
    next(it)
    assert it.get_state() == {"seed": 3, "epoch": 1, "position": 1}


def test_restart_from_saved_state_reproduces_remaining_batches(feats):
    it = _iterator(feats)
    total = it.batches_in_epoch(0) + 3  # crosses into epoch 1
    reference = [next(it) for _ in range(total)]
    for cut in (0, 2, it.batches_in_epoch(0), total - 1):
        fresh = _iterator(feats)
        for _ in range(cut):
            next(fresh)
        state = fresh.get_state()
        resumed = _iterator(feats, seed=999)  # the saved seed wins
        resumed.set_state(dict(state))
        for expected in reference[cut:]:
            assert _same(expected, next(resumed))


def test_two_hosts_get_disjoint_rows_covering_the_epoch(feats):
    single = _iterator(feats)
    hosts = [_iterator(feats, process_index=i, process_count=2) for i in range(2)]
    assert hosts[0].local_batch_size == 2
    for _ in range(single.batches_in_epoch(0)):
        whole, parts = next(single), [next(h) for h in hosts]
        for k in BATCH_KEYS:
            np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), whole[k])
    # Across the epoch every pair sits in exactly one row of one batch.
    seen = [
        i
        for p in range(single.batches_in_epoch(0))
        for row in single.global_rows(0, p)
        for i in row
    ]
    assert sorted(seen) == list(range(len(feats)))


def test_unpacked_mode_and_epoch_limit(feats):
    it = _iterator(feats, packing=False, num_epochs=1, input_len=256, target_len=192)
    batches = list(it)
    assert len(batches) == -(-len(feats) // 4)
    assert all(b["encoder_segment_ids"].max() <= 1 for b in batches)
    real_rows = sum(int((b["encoder_segment_ids"].max(1) > 0).sum()) for b in batches)
    assert real_rows == len(feats)  # the last batch is completed with empty rows
    with pytest.raises(StopIteration):
        next(it)


def test_bad_arguments_and_states_are_clear_errors(feats):
    with pytest.raises(ValueError, match="multiple of the process count"):
        _iterator(feats, batch_size=3, process_count=2)
    with pytest.raises(ValueError, match="do not fit rows"):
        _iterator(feats, input_len=64)
    with pytest.raises(ValueError, match="lacks"):
        _iterator(feats).set_state({"seed": 1, "epoch": 0})
    with pytest.raises(ValueError, match="not an integer"):
        _iterator(feats).set_state({"seed": 1, "epoch": "x", "position": 0})
    for bad, message in ((-1, "position=-1 is negative"), (2.5, "position=2.5 is not an integer"),
                         (True, "position=True is not an integer"),
                         ("3", "position='3' is not an integer")):
        with pytest.raises(ValueError, match=re.escape(message)):
            _iterator(feats).set_state({"seed": 1, "epoch": 0, "position": bad})
    it = _iterator(feats)
    seed, end = it.get_state()["seed"], it.batches_in_epoch(0)
    it.set_state({"seed": seed, "epoch": 0, "position": end})  # the end of the epoch: valid
    with pytest.raises(ValueError, match=f"position {end + 1} is past the end of epoch 0"):
        it.set_state({"seed": seed, "epoch": 0, "position": end + 1})
    assert it.get_state() == {"seed": seed, "epoch": 0, "position": end}, "refused: not taken"
    with pytest.raises(ValueError, match="at least one feature"):
        _iterator([])
    with pytest.raises(ValueError, match="process_index 2"):
        _iterator(feats, process_index=2, process_count=2)


def test_pipeline_from_config_dict():
    data_cfg = {
        "name": "synthetic",
        "teachers": TEACHERS,
        "tokenizer": "byte",
        "max_input_len": 512,
        "max_target_len": 256,
        "packing": True,
        "packed_input_len": 0,
        "packed_target_len": 0,
        "seed": 0,
        "synthetic": {"train_size": 40, "valid_size": 10, "test_size": 10},
    }
    data_cfg = data_spec(data_cfg)
    examples, _ = pipeline.load_examples(data_cfg, "train")
    tok = pipeline.tokenizer_for(data_cfg)
    features, report = pipeline.build_features(data_cfg, examples, tok)
    assert report.counts["features/answer/pairs"] == 40
    it = pipeline.make_iterator(data_cfg, features, batch_size=2, process_index=0, process_count=1)
    li, lt = pipeline.row_lengths(data_cfg, features)
    in_lens, t_lens = feature_lengths(features)
    assert li >= in_lens.max() and lt >= t_lens.max() and li % 64 == 0 and lt % 64 == 0
    assert next(it)["encoder_input_tokens"].shape == (2, li)
    with pytest.raises(ConfigError, match=r"packed_input_len = 128: must be 0 .* >= max_input_len"):
        data_spec({**dataclasses.asdict(data_cfg), "packed_input_len": 128})
    with pytest.raises(ConfigError, match=r"config\.data\.data_dir = ''"):
        data_spec({"name": "obqa", "teachers": ("flan",)})


def test_stats_report_counts_lengths_and_both_efficiencies():
    stats_mod = pytest.importorskip("tinyllm_jax.data.stats")
    data_cfg = {
        "name": "synthetic",
        "teachers": TEACHERS,
        "max_input_len": 512,
        "max_target_len": 256,
        "synthetic": {
            "train_size": 1,
            "valid_size": 1,
            "test_size": 50,
            "missing_rates": {"verbal": 0.2},
        },
    }
    stats = stats_mod.split_stats(data_cfg, "test", ByteTokenizer())
    missing = stats["teachers"]["verbal"]["missing_rationale"]
    assert stats["examples"] == 50 and stats["pairs"] == 150 - missing
    assert stats["truncation"] == {"verbal/dropped_missing_rationale": missing}
    p50, p90, p99, top = stats["lengths"]["answer"]["input"]
    assert p50 <= p90 <= p99 <= top <= 512
    assert stats["packed"]["efficiency"] > 2 * stats["padded"]["efficiency"]
    text = stats_mod.format_stats("synthetic", stats)
    assert "packing: packed" in text and "padded 512x256" in text and "verbal" in text
