"""Train-step throughput and MFU: our jitted packed step vs two PyTorch baselines.

Every system trains the same randomly initialised FLAN-T5-small-shaped
model (our init, exported to HF format, loaded by both sides) on the same
batches of `--batch` examples, each example giving an answer pair and one
rationale pair per teacher, inputs cut to 512 and targets to 256 tokens:

  (a) tinyllm_jax: `make_train_step` under `jax.jit` with state donation; the
      pairs of a batch packed into rows (first-fit decreasing) of a shape
      chosen from the data, every task in one forward.
  (b) PyTorch, the published recipe: HF T5ForConditionalGeneration, inputs
      padded to the maximum lengths, one forward per task, losses summed,
      AdamW (benchmarks/torch_reference.py).
  (c) PyTorch, a strong eager baseline: dynamic padding, all tasks
      concatenated into one forward.

Systems run interleaved in one process (round r runs each system once, in a
rotating order, plus a probe of the peak float32 matmul rate), so load from
other processes lands on all of them alike; report ratios. Compile and
warm-up steps are timed apart from the steady state. MFU = model FLOPs of
the real (non-pad) tokens (benchmarks/flops.py) / step time / the measured
matmul peak; it is the same numerator for every system.

    python benchmarks/train_step.py                       # obqa + both teachers
    python benchmarks/train_step.py --warmup 3 --steps 5 --json train_step.json
    python benchmarks/train_step.py --systems a --ablations fixed-rows,unpacked,per-task --steps 2

`--ablations` adds variants of (a) that switch one optimisation off; see
docs/performance.md for what each measures. Every variant keeps its own train
state and batches, so `--ablations all` needs more than 24 GiB at the default
sizes; docs/performance.md runs them in three groups.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python benchmarks/train_step.py` from anywhere
sys.path.insert(0, str(REPO / "benchmarks"))

from flops import pair_flops, row_flops  # noqa: E402

from tinyllm_jax.data.features import TaskFeature, build_task_features  # noqa: E402
from tinyllm_jax.data.packing import materialize_rows, plan_rows  # noqa: E402
from tinyllm_jax.models.t5 import SIZES, T5, T5Config  # noqa: E402

SHARED = REPO.parent / "shared"
STEP_KEYS = (
    "encoder_input_tokens", "encoder_segment_ids", "decoder_input_tokens",
    "decoder_target_tokens", "decoder_segment_ids", "decoder_task_ids", "decoder_loss_weights",
)
ABLATIONS = ("fixed-rows", "unpacked", "per-task", "threefry-dropout", "3d-dots", "bias-reduce",
             "no-donation", "bf16", "remat-full", "remat-dots")
# Peak probe: large float32 matmuls (m, k, n); the best rate of any counts.
PEAK_SHAPES = ((2048, 2048, 2048), (4096, 512, 4096))


# --- workload ---------------------------------------------------------------


@dataclasses.dataclass
class Workload:
    batches: list[list[TaskFeature]]  # the pairs of each step's examples
    all_batches: list[list[TaskFeature]]  # every batch of the split, for the row shape
    teachers: tuple[str, ...]
    source: str
    max_input_len: int
    max_target_len: int

    @property
    def num_tasks(self) -> int:
        return 1 + len(self.teachers)


def _group(features: Sequence[TaskFeature], ids: Sequence[str], size: int) -> list[list[TaskFeature]]:
    by_id: dict[str, list[TaskFeature]] = {}
    for f in features:
        by_id.setdefault(f.example_id, []).append(f)
    out = []
    for start in range(0, len(ids) - size + 1, size):
        out.append([f for i in ids[start : start + size] for f in by_id.get(i, [])])
    return out


def load_workload(args: argparse.Namespace, num_batches: int) -> Workload:
    """Batches of `args.batch` examples in a fixed shuffled order (seed 0)."""
    from tinyllm_jax.data.tokenizer import load_named_tokenizer

    data_root = Path(args.data_root)
    use_obqa = args.data == "obqa" or (args.data == "auto" and (data_root / args.dataset).is_dir())
    if use_obqa:
        from tinyllm_jax.data.tinyllm import read_split

        teachers = tuple(args.teachers.split(","))
        examples, _ = read_split(data_root, args.dataset, "train", teachers)
        vocab = Path(args.tokenizer) if args.tokenizer else SHARED / "t5-vocab"
        tokenizer = load_named_tokenizer(str(vocab) if vocab.exists() else "byte")
        source = f"{args.dataset} train ({data_root}), teachers {','.join(teachers)}"
    else:
        from tinyllm_jax.data import synthetic

        teachers = ("algebra", "verbal")
        examples, _ = synthetic.generate_split("train", synthetic.SyntheticConfig(), teachers)
        tokenizer = load_named_tokenizer(args.tokenizer or "byte")
        source = "synthetic train (../shared absent or --data synthetic), teachers algebra,verbal"
    source += f", tokenizer {type(tokenizer).__name__}"
    order = np.random.default_rng(args.seed).permutation(len(examples))
    examples = [examples[i] for i in order]
    features, _ = build_task_features(
        examples, tokenizer, teachers=teachers, max_input_len=args.max_input_len,
        max_target_len=args.max_target_len,
    )
    all_batches = _group(features, [e.id for e in examples], args.batch)
    if len(all_batches) < num_batches:
        raise SystemExit(f"{source} has {len(all_batches)} batches of {args.batch}; "
                         f"{num_batches} needed (lower --warmup / --steps)")
    return Workload(all_batches[:num_batches], all_batches, teachers, source, args.max_input_len,
                    args.max_target_len)


# Seeded random pair orders tried by plan_packed besides the sorted ones.
PACK_RANDOM_ORDERS = 4


def plan_packed(
    features: Sequence[TaskFeature], input_len: int, target_len: int,
) -> list[list[int]]:
    """Rows (lists of pair indices) from the packing module's first-fit `plan_rows`.

    First-fit depends on the order of the pairs. Sorting by target length
    (first-fit decreasing on the scarcer side) packed obqa into 8.6 rows per
    16 examples where the lower bound max(ceil(inputs / Li), ceil(targets /
    Lt)) is 6.8: it stacks all the long rationales first, filling decoder
    slots while encoder slots stay empty. Sorting by input length gave 7.2,
    the given order 7.3, the best of a few orders 6.9 (docs/performance.md).
    So: the fewest rows over input-sorted, given, target-sorted and
    PACK_RANDOM_ORDERS seeded random orders; ~1 ms of host time per batch.
    """
    li = np.fromiter((len(f.inputs) for f in features), np.int64, len(features))
    lt = np.fromiter((len(f.targets) for f in features), np.int64, len(features))
    rng = np.random.default_rng(0)
    orders = [np.argsort(-li, kind="stable"), np.arange(len(li)), np.argsort(-lt, kind="stable")]
    orders += [rng.permutation(len(li)) for _ in range(PACK_RANDOM_ORDERS)]
    best: list[list[int]] | None = None
    for order in orders:
        rows = plan_rows(li[order], lt[order], input_len, target_len)
        if best is None or len(rows) < len(best):
            best = [[int(order[j]) for j in row] for row in rows]
    assert best is not None
    return best


def choose_packed_shape(
    cfg: T5Config, batches: Sequence[Sequence[TaskFeature]], *, fixed_rows: bool = False,
    multiple: int = 64, max_scale: int = 3,
) -> tuple[int, int, int]:
    """(input_len, target_len, most rows) of the packed rows, chosen from the data.

    Candidates are multiples of `multiple` that hold the longest pair, up to
    `max_scale` times that. Each is costed by the FLOPs a step executes
    (`row_flops`, attention over the whole row included) averaged over every
    batch of the split, a batch taking as few rows as its pairs fit in; with
    `fixed_rows` every step is padded to the most rows any batch needs.
    """
    def up(n: int) -> int:
        return -(-n // multiple) * multiple

    li = up(max(len(f.inputs) for b in batches for f in b))
    lt = up(max(len(f.targets) for b in batches for f in b))
    # An evenly spread sample keeps the search to seconds on large splits.
    sample = [batches[i] for i in np.linspace(0, len(batches) - 1, min(len(batches), 64)).astype(
        int)]
    best: tuple[float, int, int] | None = None
    for a in range(li, max_scale * li + 1, multiple):
        for t in range(lt, max_scale * lt + 1, multiple):
            rows = [len(plan_packed(b, a, t)) for b in sample]
            cost = (max(rows) if fixed_rows else float(np.mean(rows))) * row_flops(cfg, a, t)
            if best is None or cost < best[0]:
                best = (cost, a, t)
    assert best is not None
    _, a, t = best
    return a, t, max(len(plan_packed(b, a, t)) for b in batches)


def packing_report(
    batches: Sequence[Sequence[TaskFeature]], input_len: int, target_len: int,
) -> dict[str, float]:
    """Mean rows per batch of the split for single pair orders vs plan_packed."""
    def mean_rows(order_of: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> float:
        counts = []
        for b in batches:
            li = np.array([len(f.inputs) for f in b])
            lt = np.array([len(f.targets) for f in b])
            o = order_of(li, lt)
            counts.append(len(plan_rows(li[o], lt[o], input_len, target_len)))
        return float(np.mean(counts))

    return {
        "target_sorted": mean_rows(lambda li, lt: np.argsort(-lt, kind="stable")),
        "input_sorted": mean_rows(lambda li, lt: np.argsort(-li, kind="stable")),
        "given_order": mean_rows(lambda li, lt: np.arange(len(li))),
        "best_of_orders": float(np.mean([len(plan_packed(b, input_len, target_len))
                                         for b in batches])),
        "lower_bound": float(np.mean([max(
            -(-sum(len(f.inputs) for f in b) // input_len),
            -(-sum(len(f.targets) for f in b) // target_len)) for b in batches])),
    }


def batch_stats(cfg: T5Config, features: Sequence[TaskFeature]) -> dict[str, float]:
    li = [len(f.inputs) for f in features]
    lt = [len(f.targets) for f in features]
    return {"real_tokens": float(sum(li) + sum(lt)), "model_flops": pair_flops(cfg, li, lt)}


# --- systems ----------------------------------------------------------------


class System:
    """prepare(features) builds a batch on the host (untimed); step(prepared) -> loss."""

    name: str
    row_shape: tuple[int, int, int] | None = None  # (rows, input_len, target_len) if fixed

    def executed_flops(self, features: Sequence[TaskFeature]) -> float:
        raise NotImplementedError

    def prepare(self, features: Sequence[TaskFeature]) -> Any:
        raise NotImplementedError

    def step(self, prepared: Any) -> float:
        raise NotImplementedError

    def compile_all(self, prepared: Sequence[Any]) -> float:
        """Seconds spent compiling for these batches before any step (0 when eager)."""
        return 0.0

    def after_step(self) -> None:
        """Untimed housekeeping between steps."""


def _rss_gb() -> tuple[float, float]:
    """(current, peak) resident memory of this process in GB (Linux; 0 elsewhere)."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text(
        ).splitlines() if ":" in line)
        return (int(fields["VmRSS"].split()[0]) / 2**20, int(fields["VmHWM"].split()[0]) / 2**20)
    except (OSError, KeyError, ValueError):
        return 0.0, 0.0


def _limit_malloc_caching() -> None:
    """Make glibc return large freed blocks to the OS at once.

    The PyTorch steps allocate and free multi-GB autograd graphs; with glibc's
    adaptive mmap threshold those blocks end up in the heap and stay resident
    after the step, so five systems in one process ran a 24 GB machine out of
    memory. A fixed 1 MiB mmap threshold (M_MMAP_THRESHOLD = -3) serves every
    large block by mmap, released by free.
    """
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)


def _optimizer(args: argparse.Namespace) -> Any:
    from tinyllm_jax.optim import make_optimizer

    opt = argparse.Namespace(
        name="adamw", lr=args.lr, schedule="constant", warmup_steps=0, end_lr_fraction=0.0,
        weight_decay=args.weight_decay, b1=0.9, b2=0.999, eps=1e-8, clip_norm=args.clip_norm,
    )
    return make_optimizer(opt, total_steps=1)[0]


def _bernoulli_mask(key: jax.Array, shape: tuple[int, ...], rate: float) -> jax.Array:
    return jax.random.bernoulli(key, 1.0 - rate, shape)  # Flax nn.Dropout's threefry way


def _tensordot(x: jax.Array, w: jax.Array, n: int, dtype: Any) -> jax.Array:
    return jnp.tensordot(x.astype(dtype), w.astype(dtype), axes=n)  # 3-D dots, as einsum did


def _plain_add(scores: jax.Array, bias: jax.Array) -> jax.Array:
    return scores + bias  # autodiff's leading-axis reduce for the bias gradient


# Ablations that trace the model with one of its optimisations swapped back
# for the straightforward code: (module attribute, replacement).
MODEL_SWAPS = {
    "threefry-dropout": ("dropout_keep_mask", _bernoulli_mask),
    "3d-dots": ("_dense", _tensordot),
    "bias-reduce": ("add_shared_bias", _plain_add),
}


@contextlib.contextmanager
def _swapped(ablation: str | None) -> Iterator[None]:
    """Trace with tinyllm_jax.models.t5.<attr> replaced (looked up at trace time)."""
    import tinyllm_jax.models.t5 as t5

    if ablation not in MODEL_SWAPS:
        yield
        return
    attr, replacement = MODEL_SWAPS[ablation]
    original = getattr(t5, attr)
    setattr(t5, attr, replacement)
    try:
        yield
    finally:
        setattr(t5, attr, original)


class JaxSystem(System):
    """Our step. Layouts:

    - "packed" (a): the pairs packed into as few rows of (input_len,
      target_len) as they fit; one compiled program per row count met
      (all compiled before timing). With `fixed_rows`, every batch is padded
      to `rows` rows instead: one program.
    - "unpacked": a pair per row, `rows` rows, one forward for all tasks.
    - "per-task": as unpacked, one forward per task (`rows` rows each).
    """

    def __init__(
        self, name: str, cfg: T5Config, params: Any, coefs: np.ndarray, args: argparse.Namespace,
        *, layout: str, shape: tuple[int, int, int], donate: bool = True,
        swap: str | None = None, fixed_rows: bool = False,
    ) -> None:
        from tinyllm_jax.train_step import make_train_step, state_from_params

        self.name, self.cfg, self.layout = name, cfg, layout
        self.rows, self.input_len, self.target_len = shape
        self.bucketed = layout == "packed" and not fixed_rows
        self.row_shape = shape
        self.swap = swap
        tx = _optimizer(args)
        self.state = state_from_params(jax.tree.map(jnp.asarray, params), tx, args.seed)
        fn = make_per_task_step(cfg, tx, coefs) if layout == "per-task" else make_train_step(
            cfg, tx, coefs)
        self.fn = jax.jit(fn, donate_argnums=(0,) if donate else ())
        self.compiled: dict[int, Any] = {}  # rows -> executable
        self.num_tasks = len(coefs)

    def _plan(self, features: Sequence[TaskFeature]) -> list[list[int]]:
        if self.layout == "packed":
            plan = plan_packed(features, self.input_len, self.target_len)
        else:
            plan = [[i] for i in range(len(features))]
        if len(plan) > self.rows:
            raise ValueError(f"{self.name}: batch needs {len(plan)} rows, the step has {self.rows}")
        return plan if self.bucketed else plan + [[]] * (self.rows - len(plan))

    def executed_flops(self, features: Sequence[TaskFeature]) -> float:
        rows = self.num_tasks * self.rows if self.layout == "per-task" else len(
            self._plan(features))
        return rows * row_flops(self.cfg, self.input_len, self.target_len)

    def prepare(self, features: Sequence[TaskFeature]) -> Any:
        li, lt = self.input_len, self.target_len
        if self.layout == "per-task":
            per_task = []
            for t in range(self.num_tasks):
                plan = [[i] for i, f in enumerate(features) if f.task_id == t]
                b = materialize_rows(features, plan + [[]] * (self.rows - len(plan)), li, lt)
                per_task.append({k: jnp.asarray(b[k]) for k in STEP_KEYS})
            return tuple(per_task)
        b = materialize_rows(features, self._plan(features), li, lt)
        return {k: jnp.asarray(b[k]) for k in STEP_KEYS}

    @staticmethod
    def _key(prepared: Any) -> int:
        first = prepared[0] if isinstance(prepared, tuple) else prepared
        return int(first["encoder_input_tokens"].shape[0])

    def compile_all(self, prepared: Sequence[Any]) -> float:
        t0 = time.perf_counter()
        for p in prepared:
            key = self._key(p)
            if key not in self.compiled:
                with _swapped(self.swap):
                    self.compiled[key] = self.fn.lower(self.state, p).compile()
        return time.perf_counter() - t0

    def step(self, prepared: Any) -> float:
        self.state, metrics = self.compiled[self._key(prepared)](self.state, prepared)
        return float(metrics["loss"])  # blocks until the step is done


def make_per_task_step(cfg: T5Config, tx: Any, coefs: np.ndarray) -> Callable:
    """Ablation: the recipe's structure in JAX, one forward per task, losses summed."""
    from tinyllm_jax.losses import token_cross_entropy

    model = T5(cfg)
    coefs = np.asarray(coefs, np.float32)

    def step(state: Any, batches: tuple[dict[str, jax.Array], ...]) -> tuple[Any, dict]:
        rng = jax.random.fold_in(state.rng, state.step)

        def loss_fn(params: Any) -> jax.Array:
            total = jnp.zeros(())
            for t, b in enumerate(batches):
                logits = model.apply(
                    {"params": params}, b["encoder_input_tokens"], b["decoder_input_tokens"],
                    b["encoder_segment_ids"], b["decoder_segment_ids"], enable_dropout=True,
                    rngs={"dropout": jax.random.fold_in(rng, t)},
                )
                nll, _ = token_cross_entropy(logits, b["decoder_target_tokens"])
                w = b["decoder_loss_weights"]
                total = total + coefs[t] * jnp.sum(nll * w) / jnp.maximum(jnp.sum(w), 1.0)
            return total

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        import optax

        params = optax.apply_updates(state.params, updates)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), {
            "loss": loss}

    return step


class TorchSystem(System):
    def __init__(self, name: str, kind: str, hf_dir: Path, coefs: np.ndarray,
                 args: argparse.Namespace, num_tasks: int, threads: int) -> None:
        import torch
        import torch_reference as ref
        import transformers

        self.name, self.kind, self.num_tasks, self.args = name, kind, num_tasks, args
        self.threads = threads  # torch intra-op threads while this system steps
        torch.manual_seed(args.seed)
        model = transformers.T5ForConditionalGeneration.from_pretrained(
            hf_dir, dtype=torch.float32)
        cls = ref.PaddedPerTaskStep if kind == "padded" else ref.DynamicConcatStep
        self.runner = cls(model, coefs, lr=args.lr, weight_decay=args.weight_decay,
                          clip_norm=args.clip_norm)
        self.cfg: T5Config | None = None

    def executed_flops(self, features: Sequence[TaskFeature]) -> float:
        assert self.cfg is not None
        if self.kind == "padded":
            rows = sum(1 for t in range(self.num_tasks) for f in features if f.task_id == t)
            return rows * row_flops(self.cfg, self.args.max_input_len, self.args.max_target_len)
        li = max(len(f.inputs) for f in features)
        lt = max(len(f.targets) for f in features)
        return len(features) * row_flops(self.cfg, li, lt)

    def prepare(self, features: Sequence[TaskFeature]) -> Any:
        import torch_reference as ref

        if self.kind == "padded":
            return ref.make_padded_per_task_batch(
                features, self.num_tasks, self.args.max_input_len, self.args.max_target_len)
        return ref.make_dynamic_concat_batch(features)

    def step(self, prepared: Any) -> float:
        import torch

        torch.set_num_threads(self.threads)
        return self.runner(prepared)

    def after_step(self) -> None:
        # glibc keeps freed autograd buffers mapped; hand them back so the
        # other systems in this process do not run short of memory.
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


# --- peak -------------------------------------------------------------------


class PeakProbe:
    """Best float32 matmul rate of PEAK_SHAPES (FLOP/s), jitted, measured now."""

    def __init__(self, scale: float = 1.0) -> None:
        self.fns = []
        for m, k, n in PEAK_SHAPES:
            m, k, n = (max(64, int(x * scale)) for x in (m, k, n))
            a = jax.random.normal(jax.random.key(1), (m, k), jnp.float32)
            b = jax.random.normal(jax.random.key(2), (k, n), jnp.float32)
            f = jax.jit(jnp.matmul)
            f(a, b).block_until_ready()
            self.fns.append((f, a, b, 2.0 * m * k * n, f"{m}x{k}x{n}"))

    def __call__(self) -> tuple[float, str]:
        best = (0.0, "")
        for f, a, b, flops, label in self.fns:
            for _ in range(3):
                t0 = time.perf_counter()
                f(a, b).block_until_ready()
                rate = flops / (time.perf_counter() - t0)
                best = max(best, (rate, label))
        return best


# --- profile ----------------------------------------------------------------

# Where an XLA op's time goes, by the op_name JAX records in its metadata
# (first match wins). The Flax module path names the layer part.
PROFILE_CATEGORIES = (
    ("dropout masks", r"Dropout|_bernoulli|_uniform|threefry"),
    ("LM head + loss", r"decoder/dot_general|decoder/transpose|jvp\(\)/|transpose\(jvp\(\)\)/"
                       r"|logsumexp|take_along_axis|one_hot"),
    ("MLP", r"/mlp/"),
    ("attention q/k/v/o projections", r"attention/(reshape|dot_general)|_dense"),
    ("attention scores, softmax, bias", r"attention/|relpos_bias|softmax"),
    ("layer norms", r"_norm/|layer_norm"),
    ("optimizer + finite check", r"adam|optax|global_norm|clip|_where|select_n|sqrt|step/add"),
)


def profile_step(system: JaxSystem, prepared: Any, out_dir: Path) -> dict[str, float]:
    """Seconds per category of one traced step (XLA:CPU thunk events)."""
    import collections
    import gzip
    import re
    import shutil

    shutil.rmtree(out_dir, ignore_errors=True)
    with jax.profiler.trace(str(out_dir), create_perfetto_trace=True):
        system.step(prepared)
    hlo = system.compiled[system._key(prepared)].as_text()
    # Every instruction of the program (trace events with other names are
    # host-side waits that overlap the ops), with its JAX op name if any.
    names = {m.group(1): "" for m in re.finditer(r"%(\S+) = ", hlo)}
    for m in re.finditer(r"%(\S+) = \S+ \S+\(.*?op_name=\"([^\"]+)\"", hlo):
        names[m.group(1)] = m.group(2)
    trace = next(out_dir.rglob("perfetto_trace.json.gz"))
    with gzip.open(trace) as f:
        events = json.loads(f.read())
    events = events["traceEvents"] if isinstance(events, dict) else events
    spent: collections.Counter[str] = collections.Counter()
    by_op: collections.Counter[str] = collections.Counter()
    for e in events:
        name = e.get("name") or ""
        if e.get("ph") != "X" or not e.get("dur") or name not in names:
            continue
        op = names[name]
        cat = next((c for c, rx in PROFILE_CATEGORIES if re.search(rx, op)), "other")
        spent[cat] += e["dur"] / 1e6
        # Per op, layers merged: "…/layers_3/mlp/…" counts as "…/layers_N/mlp/…".
        kind = re.sub(r"[.]\d+$", "", name)
        by_op[kind + " " + re.sub(r"layers_\d+", "layers_N", op)] += e["dur"] / 1e6
    return {"categories": dict(spent.most_common()), "top_ops": dict(by_op.most_common(25))}


# --- driver -----------------------------------------------------------------


def model_config(args: argparse.Namespace) -> T5Config:
    if args.size == "tiny":  # the smoke test's shape: same code paths, seconds per step
        cfg = T5Config(vocab_size=512, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4)
    else:
        cfg = SIZES[args.size]
    return cfg.replace(dropout_rate=args.dropout)


def build_systems(args: argparse.Namespace, cfg: T5Config, work: Workload) -> list[System]:
    import flax

    from tinyllm_jax.models.hf import save_hf_checkpoint
    from tinyllm_jax.models.t5 import init_params
    from tinyllm_jax.train_step import task_coefficients

    params = jax.device_get(flax.linen.meta.unbox(init_params(cfg, jax.random.key(args.seed))))
    coefs = task_coefficients(1.0, (), len(work.teachers))
    li, lt, most = choose_packed_shape(cfg, work.all_batches)
    packed = (most, li, lt)
    fixed = choose_packed_shape(cfg, work.all_batches, fixed_rows=True)
    # Unpacked ablations: a pair per row, padded to the longest input / target
    # of the split rounded up to 64 (a fixed shape; not to the 512 / 256
    # limits, which would need more memory than the machine has).
    longest_in = max(len(f.inputs) for b in work.all_batches for f in b)
    longest_t = max(len(f.targets) for b in work.all_batches for f in b)
    ui, ut = -(-longest_in // 64) * 64, -(-longest_t // 64) * 64
    unpacked = (max(len(b) for b in work.all_batches), ui, ut)
    per_task = (args.batch, ui, ut)
    wanted = set(args.systems.split(","))
    ablations = list(ABLATIONS) if args.ablations == "all" else [
        a for a in args.ablations.split(",") if a]
    unknown = [a for a in ablations if a not in ABLATIONS]
    if unknown:
        raise SystemExit(f"unknown ablations {unknown}; choose from {', '.join(ABLATIONS)}")
    systems: list[System] = []
    if "a" in wanted:
        systems.append(JaxSystem("(a) tinyllm_jax packed", cfg, params, coefs, args,
                                 layout="packed", shape=packed))
    for abl in ablations:
        c, kw = cfg, {"layout": "packed", "shape": packed}
        if abl == "fixed-rows":
            kw.update(shape=(fixed[2], fixed[0], fixed[1]), fixed_rows=True)
        elif abl == "no-donation":
            kw["donate"] = False
        elif abl in MODEL_SWAPS:
            kw["swap"] = abl
        elif abl == "unpacked":
            kw.update(layout="unpacked", shape=unpacked)
        elif abl == "per-task":
            kw.update(layout="per-task", shape=per_task)
        elif abl == "bf16":
            c = cfg.replace(dtype="bfloat16")
        else:
            c = cfg.replace(remat=abl.split("-")[1])
        systems.append(JaxSystem(f"(a) {abl}", c, params, coefs, args, **kw))
    if wanted & {"b", "c"}:
        tmp = Path(tempfile.mkdtemp(prefix="tinyllm_bench_"))
        save_hf_checkpoint(tmp, cfg, params)
        import torch

        default = torch.get_num_threads()
        counts = [int(x) or default for x in str(args.torch_threads).split(",")]
        for key, kind, name in (("b", "padded", "(b) torch padded per-task"),
                                ("c", "dynamic", "(c) torch dynamic concat")):
            if key not in wanted:
                continue
            for n in counts:
                label = name if len(counts) == 1 else f"{name} {n}t"
                s = TorchSystem(label, kind, tmp, coefs, args, work.num_tasks, n)
                s.cfg = cfg
                systems.append(s)
    return systems


def run(args: argparse.Namespace) -> dict[str, Any]:
    cfg = model_config(args)
    n_batches = args.warmup + args.steps
    work = load_workload(args, n_batches)
    systems = build_systems(args, cfg, work)
    packed = next((s for s in systems if isinstance(s, JaxSystem) and s.layout == "packed"), None)
    packing = packing_report(work.all_batches, packed.input_len, packed.target_len) if (
        packed) else None
    stats = [batch_stats(cfg, b) for b in work.batches]
    peak = PeakProbe(scale=1.0 if args.size != "tiny" else 0.125)

    prepared: dict[str, list[Any]] = {}
    prep_s: dict[str, float] = {}
    for s in systems:
        t0 = time.perf_counter()
        prepared[s.name] = [s.prepare(b) for b in work.batches]
        prep_s[s.name] = (time.perf_counter() - t0) / n_batches

    rec: dict[str, dict[str, Any]] = {s.name: {"steps": [], "losses": []} for s in systems}
    for s in systems:  # warm-up: compile, then the first steps, timed apart
        r = rec[s.name]
        r["compile_s"] = s.compile_all(prepared[s.name])
        r["programs"] = len(getattr(s, "compiled", {})) or None
        r["warmup_s"] = []
        for i in range(args.warmup):
            t0 = time.perf_counter()
            r["losses"].append(s.step(prepared[s.name][i]))
            r["warmup_s"].append(time.perf_counter() - t0)
            s.after_step()
        print(f"  warm-up {s.name}: compile {r['compile_s']:.1f}s, steps "
              f"{' '.join(f'{x:.2f}' for x in r['warmup_s'])}s; process RSS now / peak "
              "{:.1f} / {:.1f} GB".format(*_rss_gb()), flush=True)

    peaks: list[float] = []
    peak_labels: list[str] = []
    for k in range(args.steps):  # steady state, interleaved, rotating order
        rate, label = peak()
        peaks.append(rate)
        peak_labels.append(label)
        i = args.warmup + k
        for s in systems[k % len(systems):] + systems[: k % len(systems)]:
            t0 = time.perf_counter()
            rec[s.name]["losses"].append(s.step(prepared[s.name][i]))
            rec[s.name]["steps"].append(time.perf_counter() - t0)
            s.after_step()
        print(f"  round {k + 1}/{args.steps}: peak {rate / 1e9:.1f} GFLOP/s; " + ", ".join(
            f"{s.name.split()[0]} {rec[s.name]['steps'][-1]:.2f}s" for s in systems), flush=True)

    profile = None
    if args.profile:
        jax_systems = [s for s in systems if isinstance(s, JaxSystem)]
        if jax_systems:
            profile = profile_step(jax_systems[0], prepared[jax_systems[0].name][-1], args.profile)

    timed = stats[args.warmup :]
    examples = args.batch * args.steps
    tokens = sum(x["real_tokens"] for x in timed)
    flops = sum(x["model_flops"] for x in timed)
    peak_med = statistics.median(peaks)
    results: dict[str, Any] = {}
    for s in systems:
        r = rec[s.name]
        total = sum(r["steps"])
        executed = sum(s.executed_flops(b) for b in work.batches[args.warmup :])
        results[s.name] = {
            "examples_per_s": examples / total,
            "real_tokens_per_s": tokens / total,
            "step_s_median": statistics.median(r["steps"]),
            "step_s": r["steps"],
            "compile_s": r["compile_s"],
            "compiled_programs": r["programs"],
            "warmup_step_s": r["warmup_s"],
            "mfu": flops / total / peak_med,
            # Each round's step against the peak probed just before it.
            "mfu_paired_median": statistics.median(
                x["model_flops"] / t / p for x, t, p in zip(timed, r["steps"], peaks)),
            "executed_over_model_flops": executed / flops,
            "host_prep_s_per_batch": prep_s[s.name],
            "first_loss": r["losses"][0] if r["losses"] else None,
            "row_shape": list(s.row_shape) if s.row_shape else None,
            "rows_per_step": [JaxSystem._key(p) for p in prepared[s.name][args.warmup :]]
            if isinstance(s, JaxSystem) and s.layout != "per-task" else None,
        }
    # Ratios against the fastest thread setting of each baseline.
    def fastest(prefix: str) -> dict[str, Any] | None:
        mine = [r for n, r in results.items() if n.startswith(prefix)]
        return max(mine, key=lambda r: r["examples_per_s"]) if mine else None

    base_b, base_c = fastest("(b)"), fastest("(c)")
    for res in results.values():
        res["x_vs_b"] = res["examples_per_s"] / base_b["examples_per_s"] if base_b else None
        res["x_vs_c"] = res["examples_per_s"] / base_c["examples_per_s"] if base_c else None
    import torch

    return {
        "workload": work.source,
        "model": dataclasses.asdict(cfg),
        "batch_examples": args.batch,
        "pairs_per_step_mean": float(np.mean([len(b) for b in work.batches[args.warmup :]])),
        "real_tokens_per_step_mean": tokens / args.steps,
        "model_tflops_per_step_mean": flops / args.steps / 1e12,
        "limits": [args.max_input_len, args.max_target_len],
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "peak_flops_median": peak_med,
        "peak_flops_max": max(peaks),
        "peak_flops_per_round": peaks,
        "peak_shape_best": max(set(peak_labels), key=peak_labels.count),
        "dropout_rate": args.dropout,
        "host": {
            "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "jax": jax.__version__, "backend": jax.default_backend(),
            "torch": torch.__version__, "torch_threads": args.torch_threads,
            "load_avg_1m": os.getloadavg()[0],
            "peak_rss_gb": _rss_gb()[1],
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
        },
        "systems": results,
        "profile_s": profile,
        "packing_rows_per_batch": packing,
    }


def print_table(out: dict[str, Any]) -> None:
    print(f"\ntrain-step benchmark: {out['workload']}")
    print(f"  {out['batch_examples']} examples/step (~{out['pairs_per_step_mean']:.0f} pairs, "
          f"{out['real_tokens_per_step_mean']:.0f} real tokens, "
          f"{out['model_tflops_per_step_mean']:.3f} model TFLOP), limits {out['limits']}, "
          f"{out['warmup_steps']} warm-up + {out['timed_steps']} timed steps per system, "
          f"dropout {out['dropout_rate']}")
    for name, r in out["systems"].items():
        if r.get("rows_per_step"):
            print(f"  {name}: rows of {r['row_shape'][1]} input / {r['row_shape'][2]} target "
                  f"slots, rows per step {r['rows_per_step']}, {r['compiled_programs']} "
                  "compiled program(s)")
    if out.get("packing_rows_per_batch"):
        p = out["packing_rows_per_batch"]
        print("  packed rows per batch over the split (mean): " + ", ".join(
            f"{k.replace('_', ' ')} {v:.2f}" for k, v in p.items()))
    print(f"  peak float32 matmul ({out['peak_shape_best']}): median "
          f"{out['peak_flops_median'] / 1e9:.1f}, max {out['peak_flops_max'] / 1e9:.1f} GFLOP/s; "
          f"{out['host']['backend']}, {out['host']['cpu_count']} cores, "
          f"load avg {out['host']['load_avg_1m']:.1f}")
    head = (f"{'system':<30}{'ex/s':>7}{'tok/s':>8}{'step s':>8}{'compile s':>10}"
            f"{'warm-up s':>10}{'MFU':>7}{'exec/model':>11}{'vs (b)':>8}{'vs (c)':>8}")
    print(head)
    print("-" * len(head))
    for name, r in out["systems"].items():
        vb = f"{r['x_vs_b']:.2f}x" if r["x_vs_b"] else "-"
        vc = f"{r['x_vs_c']:.2f}x" if r["x_vs_c"] else "-"
        warm = r["warmup_step_s"][0] if r["warmup_step_s"] else 0.0
        print(f"{name:<30}{r['examples_per_s']:>7.2f}{r['real_tokens_per_s']:>8.0f}"
              f"{r['step_s_median']:>8.2f}{r['compile_s']:>10.1f}{warm:>10.2f}"
              f"{100 * r['mfu']:>6.1f}%{r['executed_over_model_flops']:>10.2f}x{vb:>8}{vc:>8}")
    print("ex/s, tok/s and MFU use the summed timed steps; 'step s' is their median; 'warm-up s'"
          " is the first step after compiling; exec/model = FLOPs a dense implementation "
          "executes (pads, whole-row attention) over model FLOPs on real tokens; Nt = torch "
          "threads; 'vs' ratios are against the fastest variant of (b) / (c).")
    if out.get("profile_s"):
        cats = out["profile_s"]["categories"]
        total = sum(cats.values())
        print(f"\nprofile of one traced step of {next(iter(out['systems']))}: "
              f"{total:.2f}s in XLA ops")
        for cat, sec in cats.items():
            print(f"  {cat:<36}{sec:>7.2f}s {100 * sec / total:>5.1f}%")
        print("top ops (thunk kind, JAX op name; layers merged):")
        for op, sec in list(out["profile_s"]["top_ops"].items())[:15]:
            print(f"  {sec:>7.2f}s  {op[:130]}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=("auto", "obqa", "synthetic"), default="auto",
                    help="auto: the TinyLLM dataset when --data-root has it, else synthetic")
    ap.add_argument("--data-root", default=str(SHARED / "data" / "tinyllm"))
    ap.add_argument("--dataset", default="obqa")
    ap.add_argument("--teachers", default="flan,llama")
    ap.add_argument("--tokenizer", default="", help="default: ../shared/t5-vocab, else byte")
    ap.add_argument("--batch", type=int, default=16, help="examples per step, every system")
    ap.add_argument("--max-input-len", type=int, default=512)
    ap.add_argument("--max-target-len", type=int, default=256)
    ap.add_argument("--size", default="flan-t5-small", choices=(*SIZES, "tiny"))
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps after compiling")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per system")
    ap.add_argument("--systems", default="a,b,c")
    ap.add_argument("--ablations", default="",
                    help=f"comma list or 'all': {', '.join(ABLATIONS)}")
    ap.add_argument("--torch-threads", default="0",
                    help="torch threads for (b) and (c): 0 = torch's default (one per core); "
                         "a list such as 0,1 runs each baseline once per setting (on a "
                         "machine shared with other jobs 1 thread can be faster); ratios use "
                         "the fastest")
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--clip-norm", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="write the results here (for CI history)")
    ap.add_argument("--profile", type=Path,
                    help="trace one extra step of the first JAX system into this directory "
                         "and print where its time goes")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.steps < 1:
        raise SystemExit("--steps must be >= 1")
    _limit_malloc_caching()
    out = run(args)
    print_table(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
