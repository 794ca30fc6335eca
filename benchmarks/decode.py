"""Greedy decode speed: our jitted KV-cache loop vs HF PyTorch `generate`.

Same random FLAN-T5-small-shaped weights in both (built with transformers,
imported into ours). Compile / warm-up time is reported apart from the
steady state.

Default mode: random token inputs, batch 32, 64 new tokens, median of
--repeats runs.

    python benchmarks/decode.py [--batch 32] [--new 64] [--input-len 128] [--json out.json]

`--eval` mode: the full evaluation path on a TinyLLM split (obqa test, 500
examples, by default): answer-task features, eval batches, greedy decoding,
detokenising and scoring with `tinyllm_jax.evaluation` (`decode_features` +
`accuracy_report`, what `train.py` runs: batches sorted by input length, each
padded to its bucketed length), against HF `generate` as the reference code
evaluates (Seq2SeqTrainer with predict_with_generate): the batches in dataset
order, each cut to its own longest input, then the same detokenising and
scoring. The whole split is evaluated --repeats times per system,
interleaved; the first pass of ours includes compiling. `--ablate` adds ours
with one padded shape for every batch (the length sorting switched off).

    python benchmarks/decode.py --eval [--dataset obqa --split test --eval-batch 64] [--ablate]

`--phases` mode: on one [batch, W] input per W in --widths, the time of the
encoder plus the first step and of one further decode step, ours vs HF
(both forced to --new tokens), from runs of 2 and --new tokens.

    python benchmarks/decode.py --phases --batch 64 --new 28 [--widths 48,96]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


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
    ap.add_argument("--eval", action="store_true", help="time the full evaluation of a split")
    ap.add_argument("--data-root", type=Path, default=SHARED / "data" / "tinyllm")
    ap.add_argument("--dataset", default="obqa")
    ap.add_argument("--split", default="test")
    ap.add_argument("--tokenizer", type=Path, default=SHARED / "t5-vocab")
    ap.add_argument("--eval-batch", type=int, default=64, help="train.py's eval_batch_size")
    ap.add_argument("--limit", type=int, default=0, help="evaluate only the first N examples")
    ap.add_argument("--phases", action="store_true",
                    help="time the encoder and one decode step apart, ours vs HF")
    ap.add_argument("--widths", default="48,96", help="--phases: input widths")
    ap.add_argument("--batch-sweep", default="",
                    help="--eval: also time both sides at these eval batch sizes (e.g. 32,128)")
    ap.add_argument("--ablate", action="store_true",
                    help="--eval: also time ours with one padded shape for every batch")
    args = ap.parse_args()
    if args.eval:
        eval_benchmark(args)
        return
    if args.phases:
        phase_benchmark(args)
        return

    import torch

    from tinyllm_jax.evaluation.decoding import greedy_decode

    model, cfg, params = _hf_model_and_params(args.layers)

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


def _hf_model_and_params(layers: int) -> tuple[Any, Any, Any]:
    """A random FLAN-T5-small-shaped HF model and the same weights in our format."""
    import torch
    import transformers

    from tinyllm_jax.models.hf import load_hf_checkpoint

    torch.manual_seed(0)
    hf_cfg = transformers.T5Config(
        vocab_size=32128, d_model=512, d_kv=64, d_ff=1024, num_layers=layers, num_heads=6,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0,
        pad_token_id=0, eos_token_id=1,
    )
    model = transformers.T5ForConditionalGeneration(hf_cfg).eval()
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        cfg, params = load_hf_checkpoint(d)
    return model, cfg, jax.tree.map(jnp.asarray, params)


def phase_benchmark(args: argparse.Namespace) -> None:
    """Encoder (+ first step) time and per-step time, from runs of 2 and --new tokens."""
    import torch

    from tinyllm_jax.evaluation.decoding import greedy_decode

    model, cfg, params = _hf_model_and_params(args.layers)
    cfg = cfg.replace(dropout_rate=0.0)
    rng = np.random.default_rng(0)
    result: dict[str, Any] = {}
    print(f"phase benchmark: batch {args.batch}, {args.new} tokens, FLAN-T5-small shape, "
          f"torch threads {torch.get_num_threads()}")
    for width in (int(w) for w in args.widths.split(",")):
        ids = rng.integers(2, 32000, size=(args.batch, width)).astype(np.int32)
        j_ids, j_seg = jnp.asarray(ids), jnp.ones((args.batch, width), jnp.int32)
        t_ids = torch.from_numpy(ids.astype(np.int64))
        t_mask = torch.ones((args.batch, width), dtype=torch.int64)

        def ours(n: int, j_ids=j_ids, j_seg=j_seg) -> None:
            jax.block_until_ready(greedy_decode(params, j_ids, j_seg, config=cfg, max_new_tokens=n))

        def hf(n: int, t_ids=t_ids, t_mask=t_mask) -> None:
            with torch.no_grad():
                model.generate(input_ids=t_ids, attention_mask=t_mask, do_sample=False,
                               num_beams=1, max_new_tokens=n, min_new_tokens=n)

        for name, fn in (("ours", ours), ("hf", hf)):
            # _time's first call (compile / warm-up) is left out of its timings.
            best = {n: min(_time(lambda n=n, fn=fn: fn(n), args.repeats)[1]) for n in (2, args.new)}
            step = (best[args.new] - best[2]) / (args.new - 2)
            encoder = best[2] - 2 * step
            result[f"{name}_w{width}"] = {"encoder_s": encoder, "step_s": step}
            print(f"W={width:<4} {name:<5} encoder + first step {encoder:7.3f} s   "
                  f"one decode step {1000 * step:7.1f} ms")
        o, h = result[f"ours_w{width}"], result[f"hf_w{width}"]
        print(f"W={width:<4} HF / ours: encoder {h['encoder_s'] / o['encoder_s']:.2f}x, "
              f"decode step {h['step_s'] / o['step_s']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


def eval_benchmark(args: argparse.Namespace) -> None:
    """Seconds to evaluate a whole split: tinyllm_jax.evaluation vs HF generate."""
    import torch

    from tinyllm_jax import sharding
    from tinyllm_jax.data.features import ANSWER_TASK, build_task_features
    from tinyllm_jax.data.tinyllm import read_split
    from tinyllm_jax.evaluation.batching import eval_batches
    from tinyllm_jax.evaluation.decoding import decode_features, strip_after_eos
    from tinyllm_jax.evaluation.scoring import accuracy_report
    from tinyllm_jax.evaluation.split import max_new_tokens_for
    from tinyllm_jax.spec import MeshSpec
    from tinyllm_jax.tokenizers import load_tokenizer

    if not (args.data_root / args.dataset).is_dir():
        raise SystemExit(f"--eval needs the TinyLLM data at {args.data_root / args.dataset}")
    tokenizer = load_tokenizer(str(args.tokenizer) if args.tokenizer.exists() else "t5")
    examples, _ = read_split(args.data_root, args.dataset, args.split, ())
    if args.limit:
        examples = examples[: args.limit]
    features, _ = build_task_features(examples, tokenizer, teachers=(), tasks=(ANSWER_TASK,))
    # Training's default: the longest gold answer plus 8 tokens.
    max_new = max_new_tokens_for(examples, tokenizer, 0)
    model, cfg, params = _hf_model_and_params(args.layers)
    cfg = cfg.replace(dropout_rate=0.0)
    mesh = sharding.make_mesh(MeshSpec(data=-1))
    eos, pad = tokenizer.eos_id, tokenizer.pad_id

    def ours(by_length: bool = True, batch: int = args.eval_batch, cfg_: Any = None,
             params_: Any = None) -> dict[str, Any]:
        outputs = decode_features(
            params if params_ is None else params_, cfg if cfg_ is None else cfg_, features,
            mesh=mesh, batch_size=batch,
            max_new_tokens=max_new, eos_id=eos, pad_id=pad, by_length=by_length,
        )
        return {"outputs": outputs, "metrics": accuracy_report(
            outputs, examples, tokenizer)[0]}

    def hf(model: Any, by_length: bool = True, batch: int = args.eval_batch) -> dict[str, Any]:
        """HF generate in its strongest form: inference mode, the same length-sorted
        batches as ours (each cut to its own longest input; by_length=False is the
        reference code's dataset order)."""
        outputs: dict[str, list[int]] = {}
        for eb in eval_batches(features, batch_size=batch, by_length=by_length):
            keep = [i for i, e in enumerate(eb.example_ids) if e]
            mask = eb.batch["encoder_segment_ids"][keep]
            width = int(mask.sum(axis=1).max())
            ids = torch.from_numpy(eb.batch["encoder_input_tokens"][keep, :width].astype(np.int64))
            with torch.inference_mode():
                out = model.generate(
                    input_ids=ids, attention_mask=torch.from_numpy(mask[:, :width].astype(
                        np.int64)), do_sample=False, num_beams=1, max_new_tokens=max_new,
                    eos_token_id=eos, pad_token_id=pad, decoder_start_token_id=0,
                ).numpy()[:, 1:]  # drop the decoder start token
            for j, i in enumerate(keep):
                outputs[eb.example_ids[i]] = strip_after_eos(out[j], eos)
        return {"outputs": outputs, "metrics": accuracy_report(
            outputs, examples, tokenizer)[0]}

    torch.set_num_threads(os.cpu_count() or 1)
    model_bf16 = copy.deepcopy(model).to(torch.bfloat16).eval()
    params_bf16 = params  # float32 weights; the matmuls run in bf16 (cfg.dtype)
    cfg_bf16 = cfg.replace(dtype="bfloat16")
    systems = {
        "ours": ours,
        "ours_bf16": lambda: ours(cfg_=cfg_bf16, params_=params_bf16),
        "hf_sorted": lambda: hf(model),
        "hf_sorted_bf16": lambda: hf(model_bf16),
    }
    dtypes = {"ours": "float32", "ours_bf16": "bfloat16", "hf_sorted": "float32",
              "hf_sorted_bf16": "bfloat16"}
    labels = {"ours": "tinyllm_jax evaluate (jitted)", "ours_bf16": "tinyllm_jax, bf16 compute",
              "hf_sorted": "HF generate, same sorted batches",
              "hf_sorted_bf16": "HF generate, sorted, bf16 weights"}
    if args.ablate:
        systems["ours_one_shape"] = lambda: ours(by_length=False)
        labels["ours_one_shape"] = "  ablation: one padded shape"
        systems["hf_dataset_order"] = lambda: hf(model, by_length=False)
        labels["hf_dataset_order"] = "  HF in dataset order (reference)"
    for b in (int(x) for x in args.batch_sweep.split(",") if x):
        systems[f"ours_b{b}"] = lambda b=b: ours(batch=b)
        labels[f"ours_b{b}"] = f"  ours, eval batch {b}"
        systems[f"hf_sorted_b{b}"] = lambda b=b: hf(model, batch=b)
        labels[f"hf_sorted_b{b}"] = f"  HF sorted, eval batch {b}"
    times: dict[str, list[float]] = {name: [] for name in systems}
    results: dict[str, Any] = {}
    for _ in range(args.repeats + 1):  # pass 0 of ours compiles; interleaved passes
        for name, fn in systems.items():
            t0 = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - t0)
    same = sum(results["ours"]["outputs"][k] == results["hf_sorted"]["outputs"].get(k)
               for k in results["ours"]["outputs"])
    n = len(examples)
    print(f"eval benchmark: {args.dataset} {args.split}, {n} examples, batch {args.eval_batch}, "
          f"max {max_new} new tokens, FLAN-T5-small shape (random weights), "
          f"{jax.devices()[0].platform}, torch threads {torch.get_num_threads()}")
    print(f"{'system':<38}{'first pass s':>13}{'steady s':>10}{'examples/s':>12}")
    summary: dict[str, Any] = {}
    for name, label in labels.items():
        steady = statistics.median(times[name][1:])
        print(f"{label:<38}{times[name][0]:>13.2f}{steady:>10.2f}{n / steady:>12.1f}")
        summary[name] = {"seconds": steady, "dtype": dtypes.get(name, "float32"),
                         "first_pass_s": times[name][0], "passes_s": times[name],
                         "examples_per_s": n / steady, "metrics": results[name]["metrics"]}
    best = {side: min((summary[k] for k in summary if k.startswith(side) and "_b" not in k[2:]
                       and k in dtypes), key=lambda r: r["seconds"])
            for side in ("ours", "hf_sorted")}
    speedup = best["hf_sorted"]["seconds"] / best["ours"]["seconds"]
    print(f"speed-up, best dtype each (HF sorted / ours): {speedup:.2f}x; float32 predictions "
          f"identical: {same}/{n}")
    out = {"systems": summary, "predictions_identical": same == n,
           "identical_predictions": same, "examples": n, "speedup_best_dtype": speedup,
           "max_new_tokens": max_new, "eval_batch": args.eval_batch,
           "load_avg_1m": os.getloadavg()[0]}
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
