"""Teacher generation throughput: the HF backend vs the vLLM backend.

One random LlamaForCausalLM (built here, saved with save_pretrained next to a
byte-level BPE trained on synthetic questions) and the same prompts, built by
the teacher command's PromptBuilder from synthetic examples and tokenised
once: both backends get identical token ids in identical batches (longest
first, as `teachers/generate.py` batches them) and greedy decoding with the
same max_new_tokens. Timed: `backend.generate` over all batches, the systems
interleaved round by round (the machine is shared), median of --rounds; model
loading is reported apart. Generated tokens are counted as each backend
reports them (EOS not counted).

Needs vllm (its own environment; README, "Teacher rationales"):

    /work/venvs/vllm/bin/python benchmarks/teacher_backends.py \
        [--n 64 --batch 16 --new 32 --width 256 --layers 2 --rounds 3 --json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tinyllm_jax.data.synthetic import SyntheticConfig, generate_split
from tinyllm_jax.teachers.backends import load_backend
from tinyllm_jax.teachers.config import PromptSettings, teacher, teacher_spec
from tinyllm_jax.teachers.prompts import PromptBuilder
from tinyllm_jax.teachers.tiny import train_tokenizer

# vLLM on CPU: a fixed KV cache instead of 92% of RAM, no torch.compile.
CPU_ENGINE = {"kv_cache_memory_bytes": 256 * 2**20, "enforce_eager": True, "max_model_len": 2048}


def build_model(out: Path, width: int, layers: int, seed: int) -> tuple[Path, Any]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    examples = generate_split("train", SyntheticConfig(300, 0, 0, seed=seed))[0]
    texts = [e.input for e in examples] + [r for e in examples for r in e.rationales.values() if r]
    tokenizer = train_tokenizer(texts, 600)
    torch.manual_seed(seed)
    heads = width // 64  # head size 64: one the vLLM CPU attention kernels take
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=4 * width,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=2048, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
    ))
    path = out / "llama"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, tokenizer


def prompt_batches(tokenizer: Any, n: int, batch: int) -> list[list[list[int]]]:
    demos = generate_split("train", SyntheticConfig(200, 0, 0))[0]
    targets = generate_split("valid", SyntheticConfig(0, n, 0))[0]
    builder = PromptBuilder(PromptSettings(), demos, template="plain", tokenizer=tokenizer)
    ids = tokenizer([builder.build(e).text for e in targets])["input_ids"]
    ids.sort(key=len, reverse=True)
    return [ids[i : i + batch] for i in range(0, len(ids), batch)]


def time_pass(engine: Any, batches: list[list[list[int]]]) -> tuple[float, int, list[str]]:
    start = time.perf_counter()
    outputs = [g for b in batches for g in engine.generate(b)]
    seconds = time.perf_counter() - start
    return seconds, sum(g.n_tokens for g in outputs), [g.text for g in outputs]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=64, help="prompts")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new", type=int, default=32, help="max_new_tokens")
    parser.add_argument("--width", type=int, default=256, help="hidden size (a multiple of 64)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)

    import torch

    # A CPU benchmark: with libtpu importable as well, vLLM would find two
    # platforms and refuse to start.
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        path, tokenizer = build_model(Path(tmp), args.width, args.layers, args.seed)
        batches = prompt_batches(tokenizer, args.n, args.batch)
        engines, load_s = {}, {}
        for name in ("hf", "vllm"):
            spec = teacher_spec(name, teacher(
                str(path), backend=name, dtype="float32", batch_size=args.batch,
                engine_args=CPU_ENGINE if name == "vllm" else {},
                generation={"max_new_tokens": args.new},
            ).to_dict())
            start = time.perf_counter()
            engines[name] = load_backend(name, spec, tokenizer, "causal")
            load_s[name] = time.perf_counter() - start
        for engine in engines.values():  # warm-up: first-call allocations
            engine.generate(batches[-1])
        runs: dict[str, list[tuple[float, int]]] = {name: [] for name in engines}
        texts: dict[str, list[str]] = {}
        for _ in range(args.rounds):
            for name, engine in engines.items():
                seconds, tokens, texts[name] = time_pass(engine, batches)
                runs[name].append((seconds, tokens))
    systems = {}
    for name, passes in runs.items():
        seconds = statistics.median(s for s, _ in passes)
        tokens = passes[0][1]
        systems[name] = {
            "load_s": round(load_s[name], 2),
            "seconds": [round(s, 3) for s, _ in passes],
            "rationales_per_s": round(args.n / seconds, 2),
            "generated_tokens": tokens,
            "generated_tokens_per_s": round(tokens / seconds, 1),
        }
    same = sum(a == b for a, b in zip(texts["hf"], texts["vllm"]))
    result = {
        "args": vars(args),
        "torch_threads": torch.get_num_threads(),
        "prompt_tokens_max": len(batches[0][0]),
        "prompt_tokens_min": len(batches[-1][-1]),
        "systems": systems,
        "vllm_over_hf_rationales_per_s": round(
            systems["vllm"]["rationales_per_s"] / systems["hf"]["rationales_per_s"], 2),
        "identical_greedy_texts": f"{same}/{args.n}",
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
