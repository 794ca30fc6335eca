"""Choice ranking: each input encoded once, every choice scored against it."""

from __future__ import annotations

import jax
import numpy as np
from flax import linen as nn

from tinyllm_jax.data.example import Example
from tinyllm_jax.data.features import ANSWER_TASK, build_task_features
from tinyllm_jax.evaluation.ranking import rank_choices
from tinyllm_jax.losses import token_cross_entropy
from tinyllm_jax.models.t5 import T5, init_params
from tinyllm_jax.models.t5_config import T5Config
from tinyllm_jax.sharding import make_mesh
from tinyllm_jax.spec import MeshSpec
from tinyllm_jax.tokenizers import ByteTokenizer


def _pair_scorer(params, cfg, li: int, lt: int):
    """Reference: one (input, choice) pair per call, its own encoder pass (one jitted shape)."""

    @jax.jit
    def score(enc, enc_seg, dec_in, tgt, w):
        logits = T5(cfg).apply({"params": params}, enc, dec_in, enc_seg, (w > 0).astype(int))
        return -(token_cross_entropy(logits, tgt)[0] * w).sum()

    def run(inputs, target) -> float:
        enc, seg = np.zeros((1, li), np.int32), np.zeros((1, li), np.int32)
        enc[0, : len(inputs)], seg[0, : len(inputs)] = inputs, 1
        tgt, dec_in, w = (np.zeros((1, lt), np.int32) for _ in range(3))
        tgt[0, : len(target)], dec_in[0, 1 : len(target)] = target, target[:-1]
        w[0, : len(target)] = 1
        return float(score(enc, seg, dec_in, tgt, w.astype(np.float32)))

    return run


def test_rank_choices_encodes_once_and_matches_per_pair_scores():
    cfg = T5Config(vocab_size=260, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                   dropout_rate=0.0)
    params = nn.meta.unbox(init_params(cfg, jax.random.key(3)))
    tok = ByteTokenizer()
    rng = np.random.default_rng(0)
    words = ["red", "blue", "green", "a long yellow answer", "x", "cyan", "mauve"]
    examples = []
    for i in range(5):  # uneven choice counts and input lengths, a partial last batch
        choices = tuple(rng.choice(words, size=2 + i % 3, replace=False))
        examples.append(Example(f"q{i}", "why? " * (1 + 3 * i), choices, choices[0]))
    features, _ = build_task_features(examples, tok, teachers=(), tasks=(ANSWER_TASK,))
    mesh = make_mesh(MeshSpec(data=1), jax.devices()[:1])
    got = rank_choices(params, cfg, features, examples, tokenizer=tok, mesh=mesh, batch_size=2)
    by_id = {f.example_id: f for f in features}
    score = _pair_scorer(params, cfg, 128, 32)
    for ex in examples:
        scores = [score(by_id[ex.id].inputs, np.asarray(tok.encode(c) + [tok.eos_id]))
                  for c in ex.choices]
        assert got[ex.id] == int(np.argmax(scores)), (ex.id, scores)
    assert set(got) == {ex.id for ex in examples}
