"""`--mode=selfcheck`: a one-minute sanity check of the model code, no data needed.

Checks that the FLAN-T5 shapes have the published parameter counts (from
shapes alone), that KV-cache greedy decoding agrees with the teacher-forced
forward pass, and that packing two sequences into one row changes nothing.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from tinyllm_jax.evaluation.decoding import greedy_decode
from tinyllm_jax.models.t5 import T5, abstract_params, count_params, init_params
from tinyllm_jax.models.t5_config import SIZES, T5Config

_EXPECTED = {"flan-t5-small": 76_961_152, "flan-t5-base": 247_577_856}


def _check(name: str, ok: bool, detail: str) -> bool:
    print(f"  [{'ok' if ok else 'FAIL'}] {name}: {detail}", flush=True)
    return ok


def cached_matches_forced(cached: np.ndarray, forced: np.ndarray, eos_id: int,
                           pad_id: int = 0) -> tuple[bool, str]:
    """Whether every row of the cached decode equals the teacher-forced argmax
    up to and including its first EOS (all of it without one), and is padding
    after it; with the first row that does not, for the report."""
    for r, (c, f) in enumerate(zip(cached, forced)):
        hits = np.flatnonzero(c == eos_id)
        n = int(hits[0]) + 1 if hits.size else len(c)
        if not np.array_equal(c[:n], f[:n]) or (c[n:] != pad_id).any():
            return False, f"row {r}: cached {c.tolist()}, teacher-forced {f.tolist()}, EOS {eos_id}"
    return True, f"{len(cached)} rows agree up to EOS {eos_id}; row 0 {cached[0].tolist()}"


def run_selfcheck() -> None:
    t0 = time.perf_counter()
    print(f"tinyllm_jax self-check on {jax.device_count()} {jax.default_backend()} device(s)")
    results = []
    for size, want in _EXPECTED.items():
        got = count_params(abstract_params(SIZES[size]))
        results.append(_check(f"{size} parameters", got == want, f"{got:,} (expected {want:,})"))

    cfg = T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                   dropout_rate=0.0)
    params = jax.tree.map(jnp.asarray, nn.meta.unbox(init_params(cfg, jax.random.PRNGKey(0))))
    rng = np.random.default_rng(0)
    enc = jnp.asarray(rng.integers(2, 64, size=(2, 10)), jnp.int32)
    seg = jnp.ones_like(enc)
    # The uncached reference: greedy by full forward passes, one per token.
    # The decoder is causal, so one fixed shape (one compiled program) serves
    # every step: position t sees only the tokens before it.
    steps = 6
    forward = jax.jit(lambda dec: jnp.argmax(T5(cfg).apply({"params": params}, enc, dec, seg), -1))
    forced = np.zeros((2, steps), np.int32)
    for t in range(steps):
        dec_in = np.concatenate([np.zeros((2, 1), np.int32), forced[:, :-1]], axis=1)
        forced[:, t] = np.asarray(forward(jnp.asarray(dec_in)))[:, t]
    # EOS is a token row 0 emits mid-sequence, so the cached loop's early
    # stop and its padding after EOS are checked too.
    eos = int(forced[0, 2])
    out = np.asarray(greedy_decode(params, enc, seg, config=cfg, max_new_tokens=steps, eos_id=eos))
    same, detail = cached_matches_forced(out, forced, eos)
    results.append(_check("KV-cache decode == teacher-forced argmax", same, detail))

    a, b = enc[:1, :4], enc[1:, :6]
    packed = jnp.concatenate([a, b], axis=1)
    pseg = jnp.asarray([[1] * 4 + [2] * 6])
    ta, tb = jnp.asarray([[0, 5, 6]]), jnp.asarray([[0, 7]])
    lp = T5(cfg).apply({"params": params}, packed, jnp.concatenate([ta, tb], 1), pseg,
                       jnp.asarray([[1, 1, 1, 2, 2]]))
    la = T5(cfg).apply({"params": params}, a, ta)
    lb = T5(cfg).apply({"params": params}, b, tb)
    err = float(jnp.maximum(jnp.abs(lp[:, :3] - la).max(), jnp.abs(lp[:, 3:] - lb).max()))
    results.append(_check("packed == separate sequences", err < 1e-4, f"max |diff| {err:.2e}"))
    print(f"self-check {'passed' if all(results) else 'FAILED'} in {time.perf_counter() - t0:.1f}s")
    if not all(results):
        raise SystemExit(1)
