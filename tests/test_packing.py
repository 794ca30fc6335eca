"""Task features, packed and padded batches, efficiency, and loss equivalence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinyllm_jax.data.example import Example
from tinyllm_jax.data.features import (
    MIN_QUESTION_WORDS,
    TaskFeature,
    build_task_features,
    feature_lengths,
    teacher_prefixes_for,
)
from tinyllm_jax.data.packing import (
    BATCH_KEYS,
    auto_packed_lengths,
    materialize_rows,
    pack_features,
    packing_efficiency,
    pad_features,
    plan_rows,
)
from tinyllm_jax.data.synthetic import SyntheticConfig, generate_split
from tinyllm_jax.tokenizers import ByteTokenizer, load_tokenizer

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TINYLLM = SHARED / "data" / "tinyllm"
T5_VOCAB = SHARED / "t5-vocab"
BYTE = ByteTokenizer()


def _example(question="Ann has 7 apples. How many now?", rationales=None, answer="7"):
    return Example(
        id="ex0",
        question=question,
        choices=("7", "8", "9", "10"),
        answer=answer,
        rationales=rationales if rationales is not None else {"t1": "7 apples.", "t2": None},
        teacher_answers={},
    )


def _feature(i, task, n_in, n_t):
    # Distinct token values per pair make misplaced tokens visible.
    inputs = np.array([*(10 + i for _ in range(n_in - 1)), 1], np.int32)
    targets = np.array([*(100 + i for _ in range(n_t - 1)), 1], np.int32)
    return TaskFeature(f"e{i}", task, inputs, targets)


# ------------------------------------------------------------------ features


def test_features_prefixes_eos_and_dropped_missing_rationale():
    ex = _example()
    feats, report = build_task_features(
        [ex], BYTE, teachers=("t1", "t2"), max_input_len=200, max_target_len=50
    )
    assert [f.task_id for f in feats] == [0, 1]  # t2 has no rationale: dropped
    assert report.counts["features/t2/dropped_missing_rationale"] == 1
    assert BYTE.decode(feats[0].inputs) == "predict: " + ex.input
    assert BYTE.decode(feats[1].inputs) == "explain: " + ex.input
    assert BYTE.decode(feats[0].targets) == "7" and BYTE.decode(feats[1].targets) == "7 apples."
    assert all(f.inputs[-1] == 1 and f.targets[-1] == 1 for f in feats)
    assert all(f.inputs.dtype == np.int32 for f in feats)


def test_answer_only_tasks_and_custom_prefixes():
    feats, _ = build_task_features(
        [_example()],
        BYTE,
        teachers=("t1", "t2"),
        tasks=(0,),
        answer_prefix="answer: ",
        teacher_prefixes=("a: ", "b: "),
    )
    assert len(feats) == 1 and BYTE.decode(feats[0].inputs).startswith("answer: ")
    with pytest.raises(ValueError, match="one per teacher"):
        teacher_prefixes_for(("t1", "t2"), ("a: ",))
    with pytest.raises(ValueError, match="must all differ"):
        teacher_prefixes_for(("t1",), ("predict: ",))
    with pytest.raises(ValueError, match="out of range"):
        build_task_features([_example()], BYTE, teachers=("t1",), tasks=(2,))
    assert len(teacher_prefixes_for([f"t{i}" for i in range(12)])) == 12


def test_target_truncation_keeps_eos_and_is_counted():
    ex = _example(rationales={"t1": "x" * 100})
    feats, report = build_task_features([ex], BYTE, teachers=("t1",), max_target_len=20)
    assert len(feats[1].targets) == 20 and feats[1].targets[-1] == 1
    assert report.counts["features/t1/target_truncated"] == 1
    assert "features/answer/target_truncated" not in report.counts


def test_long_question_is_cut_in_the_middle_keeping_its_end_and_choices():
    question = " ".join(f"w{i}" for i in range(60)) + " How many apples now?"
    ex = _example(question=question, rationales={})
    feats, report = build_task_features([ex], BYTE, teachers=(), max_input_len=150)
    text = BYTE.decode(feats[0].inputs)
    assert len(feats[0].inputs) <= 150
    assert text.startswith("predict: w0 ") and " ... " in text
    assert "How many apples now?\nAnswer Choices:\n(a) 7\n(b) 8\n(c) 9\n(d) 10" in text
    assert report.counts["features/answer/question_truncated"] == 1


def test_long_choices_are_cut_and_hopeless_inputs_dropped():
    long_choices = tuple(" ".join(f"c{k}word{i}" for i in range(40)) for k in range(4))
    ex = Example(
        id="x",
        question="Which one is right?",
        choices=long_choices,
        answer=long_choices[0],
        rationales={},
    )
    feats, report = build_task_features(
        [ex], BYTE, teachers=(), max_input_len=200, max_target_len=400
    )
    text = BYTE.decode(feats[0].inputs)
    assert "Which one is right?" in text and "(d) c3word0" in text
    assert len(feats[0].inputs) <= 200
    assert report.counts["features/answer/choices_truncated"] == 1
    # Not even the minimal question plus one word per choice fits: dropped.
    long_q = " ".join(f"longword{i}" for i in range(3 * MIN_QUESTION_WORDS))
    ex2 = Example(id="y", question=long_q, choices=long_choices, answer=long_choices[0])
    feats2, report2 = build_task_features([ex2], BYTE, teachers=(), max_input_len=40)
    assert feats2 == [] and report2.counts["features/answer/dropped_input_too_long"] == 1


@pytest.mark.skipif(not (T5_VOCAB / "tokenizer.json").is_file(), reason=f"{T5_VOCAB} absent")
def test_t5_vocab_target_gets_eos():
    tok = load_tokenizer(T5_VOCAB)
    ex = _example(answer="Hello world")
    feats, _ = build_task_features([ex], tok, teachers=(), tasks=(0,))
    assert feats[0].targets.tolist() == [8774, 296, 1]


# ------------------------------------------------------------------ packing


def test_packed_rows_follow_the_batch_contract():
    feats = [_feature(0, 0, 3, 2), _feature(1, 2, 2, 3), _feature(2, 1, 4, 2)]
    rows = plan_rows(*feature_lengths(feats), 6, 6)
    assert rows == [[0, 1], [2]]
    b = materialize_rows(feats, rows, 6, 6)
    assert sorted(b) == sorted(BATCH_KEYS)
    assert b["encoder_input_tokens"][0].tolist() == [10, 10, 1, 11, 1, 0]
    assert b["encoder_segment_ids"][0].tolist() == [1, 1, 1, 2, 2, 0]
    assert b["encoder_positions"][0].tolist() == [0, 1, 2, 0, 1, 0]
    assert b["decoder_target_tokens"][0].tolist() == [100, 1, 101, 101, 1, 0]
    assert b["decoder_input_tokens"][0].tolist() == [0, 100, 0, 101, 101, 0]
    assert b["decoder_segment_ids"][0].tolist() == [1, 1, 2, 2, 2, 0]
    assert b["decoder_positions"][0].tolist() == [0, 1, 0, 1, 2, 0]
    assert b["decoder_task_ids"][0].tolist() == [0, 0, 2, 2, 2, 0]
    assert b["decoder_loss_weights"][0].tolist() == [1, 1, 1, 1, 1, 0]
    assert b["decoder_loss_weights"].dtype == np.float32
    assert all(b[k].dtype == np.int32 for k in BATCH_KEYS if k != "decoder_loss_weights")
    assert packing_efficiency(b) == pytest.approx((9 + 7) / 24)


def test_every_pair_lands_exactly_once():
    examples, _ = generate_split("test", SyntheticConfig(test_size=80))
    feats, _ = build_task_features(examples, BYTE, teachers=("algebra", "verbal"))
    a_len, t_len = auto_packed_lengths(*feature_lengths(feats))
    b = pack_features(feats, a_len, t_len)
    found = []
    for r in range(len(b["encoder_input_tokens"])):
        for s in range(1, b["encoder_segment_ids"][r].max() + 1):
            enc = b["encoder_input_tokens"][r][b["encoder_segment_ids"][r] == s]
            dec = b["decoder_target_tokens"][r][b["decoder_segment_ids"][r] == s]
            found.append((BYTE.decode(enc), BYTE.decode(dec)))
    expected = [(BYTE.decode(f.inputs), BYTE.decode(f.targets)) for f in feats]
    assert sorted(found) == sorted(expected)
    padded = pad_features(feats, 512, 256)  # the default per-pair limits
    assert padded["encoder_input_tokens"].shape == (len(feats), 512)
    assert padded["encoder_segment_ids"].max() == 1
    assert packing_efficiency(b) > 0.85 > 2 * packing_efficiency(padded)


def test_pairs_that_cannot_fit_a_row_are_an_error():
    feats = [_feature(0, 0, 10, 2)]
    with pytest.raises(ValueError, match="rows hold 8 / 8"):
        pack_features(feats, 8, 8)


def test_auto_lengths_fit_every_pair_and_are_aligned():
    examples, _ = generate_split("test", SyntheticConfig(test_size=100))
    feats, _ = build_task_features(examples, BYTE, teachers=("algebra", "verbal"))
    li, lt = feature_lengths(feats)
    a, b = auto_packed_lengths(li, lt)
    assert a % 64 == 0 and b % 64 == 0 and a >= li.max() and b >= lt.max()
    assert auto_packed_lengths(li, lt, packed_input_len=512)[0] == 512
    rows = plan_rows(li, lt, a, b)
    assert packing_efficiency(materialize_rows(feats, rows, a, b)) > 0.85


@pytest.mark.shared_data
def test_obqa_packing_efficiency_at_least_85_percent():
    if not (TINYLLM / "obqa").is_dir() or not (T5_VOCAB / "tokenizer.json").is_file():
        pytest.skip(f"{TINYLLM / 'obqa'} or {T5_VOCAB} absent")
    tinyllm = pytest.importorskip("tinyllm_jax.data.tinyllm")
    examples, _ = tinyllm.read_split(TINYLLM, "obqa", "train", ("flan", "llama"))
    feats, _ = build_task_features(
        examples,
        load_tokenizer(T5_VOCAB),
        teachers=("flan", "llama"),
        max_input_len=512,
        max_target_len=256,
    )
    li, lt = feature_lengths(feats)
    a, b = auto_packed_lengths(li, lt)
    order = np.random.default_rng(0).permutation(len(feats))
    rows = plan_rows(li[order], lt[order], a, b)
    used = li.sum() + lt.sum()
    efficiency = used / (len(rows) * (a + b))
    assert efficiency >= 0.85, (a, b, efficiency)


# ------------------------------------------------------------------ equivalence


def _per_pair_token_ce(logits, batch):
    """{(row, segment): token cross-entropies} from float32 logits."""
    logits = np.asarray(logits, np.float64)
    top = logits.max(-1, keepdims=True)
    logz = np.log(np.exp(logits - top).sum(-1)) + top[..., 0]
    tgt = batch["decoder_target_tokens"]
    token_ce = logz - np.take_along_axis(logits, tgt[..., None], -1)[..., 0]
    seg = batch["decoder_segment_ids"]
    assert np.all(batch["decoder_loss_weights"] == (seg > 0))
    return {
        (r, s): token_ce[r][seg[r] == s]
        for r in range(seg.shape[0])
        for s in range(1, seg[r].max() + 1)
    }


def test_packed_and_unpacked_give_the_same_per_pair_loss():
    jax = pytest.importorskip("jax")
    flax = pytest.importorskip("flax")
    t5 = pytest.importorskip("tinyllm_jax.models.t5")
    cfg = t5.T5Config(
        vocab_size=259, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, dropout_rate=0.0
    )
    # Random weights from the parameter shapes: compiling the real init costs
    # seconds on CPU and any weights expose a cross-segment leak.
    rng = np.random.default_rng(0)
    shapes = flax.linen.meta.unbox(t5.abstract_params(cfg))
    params = jax.tree.map(lambda s: rng.normal(0.0, 0.3, s.shape).astype(np.float32), shapes)
    model = t5.T5(cfg)
    examples, _ = generate_split("test", SyntheticConfig(test_size=4))
    feats, _ = build_task_features(examples, BYTE, teachers=("algebra", "verbal"))
    li, lt = feature_lengths(feats)

    @jax.jit
    def run(batch):
        return model.apply(
            {"params": params},
            batch["encoder_input_tokens"],
            batch["decoder_input_tokens"],
            encoder_segment_ids=batch["encoder_segment_ids"],
            decoder_segment_ids=batch["decoder_segment_ids"],
        )

    rows = plan_rows(li, lt, 512, 256)
    assert max(len(r) for r in rows) >= 3  # really packed
    packed = materialize_rows(feats, rows, 512, 256)
    packed_ce = _per_pair_token_ce(run(packed), packed)
    padded = pad_features(feats, int(li.max()), int(lt.max()))
    padded_ce = _per_pair_token_ce(run(padded), padded)
    assert len(packed_ce) == len(padded_ce) == len(feats)
    for r, row in enumerate(rows):
        for s, i in enumerate(row, start=1):
            np.testing.assert_allclose(packed_ce[(r, s)], padded_ce[(i, 1)], atol=1e-5, rtol=0)
            assert packed_ce[(r, s)].sum() == pytest.approx(padded_ce[(i, 1)].sum(), rel=1e-6)
