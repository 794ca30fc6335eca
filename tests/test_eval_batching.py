"""Eval batches: answer pairs in a fixed order, padded to bucketed shapes."""

from __future__ import annotations

import numpy as np
import pytest

from tinyllm_jax.data import pipeline
from tinyllm_jax.data.features import TaskFeature, feature_lengths
from tinyllm_jax.evaluation import batching
from tinyllm_jax.spec import data_spec
from tinyllm_jax.tokenizers import ByteTokenizer

TEACHERS = ("algebra", "verbal")


def test_eval_batches_answer_only_with_ids_and_host_shares():
    data_cfg = {
        "name": "synthetic",
        "teachers": TEACHERS,
        "synthetic": {"train_size": 1, "valid_size": 7, "test_size": 1},
    }
    data_cfg = data_spec(data_cfg)
    examples, _ = pipeline.load_examples(data_cfg, "valid")
    feats, _ = pipeline.build_features(data_cfg, examples, ByteTokenizer(), tasks=(0,))
    batches = list(batching.eval_batches(feats, batch_size=4, process_index=0, process_count=1))
    assert [len(b.example_ids) for b in batches] == [4, 4]
    assert [i for b in batches for i in b.example_ids] == [e.id for e in examples] + [""]
    assert batches[0].batch["encoder_input_tokens"].shape[1] % 8 == 0
    assert batches[-1].batch["decoder_loss_weights"][-1].sum() == 0
    host1 = list(batching.eval_batches(feats, batch_size=4, process_index=1, process_count=2))
    ids = [e.id for e in examples]
    assert [b.example_ids for b in host1] == [[ids[2], ids[3]], [ids[6], ""]]
    all_feats, _ = pipeline.build_features(data_cfg, examples, ByteTokenizer())
    with pytest.raises(ValueError, match="answer task only"):
        list(batching.eval_batches(all_feats, batch_size=4, process_index=0, process_count=1))


def test_eval_batches_by_length_pad_each_batch_to_its_own_bucket():
    rng = np.random.default_rng(0)
    feats = [
        TaskFeature(f"ex{i}", 0, rng.integers(3, 99, size=n).astype(np.int32),
                    np.asarray([5, 1], np.int32))
        for i, n in enumerate(rng.integers(5, 100, size=37))
    ]
    li, _ = feature_lengths(feats)
    full_len, _ = batching.eval_lengths(feats)
    order = batching.eval_order(feats, by_length=True)
    assert sorted(order) == list(range(len(feats))) and list(np.diff(li[order])) == list(
        np.abs(np.diff(li[order])))
    batches = list(batching.eval_batches(feats, batch_size=8, by_length=True,
                                         process_index=0, process_count=1))
    seen = [i for b in batches for i in b.example_ids if i]
    assert seen == [feats[i].example_id for i in order]
    widths = [b.batch["encoder_input_tokens"].shape[1] for b in batches]
    for b, width in zip(batches, widths):
        real = b.batch["encoder_segment_ids"].sum(axis=1)
        assert width == batching.bucket_length(int(real.max()), cap=full_len) >= real.max()
        kept = [t for t, e in zip(b.batch["encoder_input_tokens"], b.example_ids) if e]
        by_id = {f.example_id: f for f in feats}
        for row, ex_id in zip(kept, [e for e in b.example_ids if e]):
            n = len(by_id[ex_id].inputs)
            assert list(row[:n]) == list(by_id[ex_id].inputs) and not row[n:].any()
    assert widths == sorted(widths) and sum(widths) < full_len * len(widths)
    # Two hosts split every batch the same way, shapes included.
    host1 = list(batching.eval_batches(feats, batch_size=8, by_length=True,
                                       process_index=1, process_count=2))
    assert [b.example_ids for b in host1] == [b.example_ids[4:] for b in batches]
    assert [b.batch["encoder_input_tokens"].shape for b in host1] == [
        (4, w) for w in widths]


def test_bucket_lengths():
    assert [batching.bucket_length(n) for n in (1, 17, 25, 33, 49, 65, 97, 129, 513)] == [
        16, 24, 32, 48, 64, 96, 128, 192, 768]
    assert batching.bucket_length(130, cap=120) == 120


def test_bucket_lengths_for_row_counts_start_lower():
    assert [batching.bucket_length(n, minimum=1) for n in (1, 2, 3, 4, 5, 7, 9, 13, 17)] == [
        1, 2, 3, 4, 6, 8, 12, 16, 24]
    assert batching.bucket_length(5, cap=5, minimum=1) == 5
    with pytest.raises(ValueError, match="power of two"):
        batching.bucket_length(5, minimum=3)


def test_pad_batch_right_pads_tokens_and_marks_real_positions():
    tokens, segments = batching.pad_batch([[5, 6, 7], [8]], length=4, rows=3, pad_id=0)
    assert tokens.tolist() == [[5, 6, 7, 0], [8, 0, 0, 0], [0, 0, 0, 0]]
    assert segments.tolist() == [[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
