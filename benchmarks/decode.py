"""Greedy decode speed: our jitted KV-cache loop vs HF PyTorch `generate`.

Same random FLAN-T5-small-shaped weights in both (built with transformers,
imported into ours), same inputs, batch 32, 64 new tokens. Compile / warm-up
time is reported apart from the steady state (median of --repeats runs).

    python benchmarks/decode.py [--batch 32] [--new 64] [--input-len 128] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


def _time(fn, repeats: int) -> tuple[float, list[float], object]:
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return first, times, out


def _generated_tokens(rows: np.ndarray, eos: int) -> int:
    total = 0
    for r in rows:
        r = list(r)
        total += r.index(eos) + 1 if eos in r else len(r)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--layers", type=int, default=8, help="FLAN-T5-small has 8")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch
    import transformers

    from tinyllm_jax.decode import greedy_decode
    from tinyllm_jax.models.hf import load_hf_checkpoint

    torch.manual_seed(0)
    hf_cfg = transformers.T5Config(
        vocab_size=32128, d_model=512, d_kv=64, d_ff=1024, num_layers=args.layers, num_heads=6,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0,
        pad_token_id=0, eos_token_id=1,
    )
    model = transformers.T5ForConditionalGeneration(hf_cfg).eval()
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        cfg, params = load_hf_checkpoint(d)
    params = jax.tree.map(jnp.asarray, params)

    rng = np.random.default_rng(0)
    ids = rng.integers(2, 32000, size=(args.batch, args.input_len)).astype(np.int32)
    lengths = rng.integers(args.input_len // 2, args.input_len + 1, size=args.batch)
    mask = (np.arange(args.input_len)[None] < lengths[:, None]).astype(np.int32)
    ids = ids * mask

    def ours():
        out = greedy_decode(params, jnp.asarray(ids), jnp.asarray(mask), config=cfg,
                            max_new_tokens=args.new)
        return np.asarray(jax.block_until_ready(out))

    t_ids, t_mask = torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(mask.astype(np.int64))

    def hf():
        with torch.no_grad():
            return model.generate(input_ids=t_ids, attention_mask=t_mask, do_sample=False,
                                  num_beams=1, max_new_tokens=args.new).numpy()[:, 1:]

    c_ours, s_ours, out_ours = _time(ours, args.repeats)
    c_hf, s_hf, out_hf = _time(hf, args.repeats)
    n_ours, n_hf = _generated_tokens(out_ours, 1), _generated_tokens(out_hf, 1)
    same = out_ours.shape == out_hf.shape and bool((out_ours == out_hf).all())
    rows = {
        "tinyllm_jax greedy_decode": (c_ours, statistics.median(s_ours), n_ours),
        "HF PyTorch generate": (c_hf, statistics.median(s_hf), n_hf),
    }
    print(f"decode benchmark: batch {args.batch}, input {args.input_len}, {args.new} new tokens, "
          f"FLAN-T5-small shape ({args.layers} layers), {jax.devices()[0].platform}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'system':<28}{'first call s':>14}{'steady s':>10}{'tokens/s':>10}")
    result = {}
    for name, (first, steady, n) in rows.items():
        print(f"{name:<28}{first:>14.2f}{steady:>10.3f}{n / steady:>10.0f}")
        result[name] = {"first_call_s": first, "steady_s": steady, "tokens_per_s": n / steady}
    ratio = result["tinyllm_jax greedy_decode"]["tokens_per_s"] / result["HF PyTorch generate"][
        "tokens_per_s"]
    print(f"speed-up (tokens/s ratio): {ratio:.2f}x; identical tokens: {same}")
    result.update(speedup=ratio, identical_tokens=same, batch=args.batch, new_tokens=args.new)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
