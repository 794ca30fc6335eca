"""The run's specs: frozen dataclasses whose field defaults are the project's defaults."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from tinyllm_jax.data import synthetic
from tinyllm_jax.data.features import DEFAULT_ANSWER_PREFIX
from tinyllm_jax.evaluation.decode_options import DecodeOptions
from tinyllm_jax.models.t5_config import ATTENTION_IMPLEMENTATIONS, T5Config

DATASETS = ("synthetic", "obqa", "arc", "piqa", "riddle", "pubmedqa", "bioasq")
SPLITS = ("train", "valid", "test")
BEST_METRICS = ("accuracy", "accuracy_strict", "accuracy_normalized", "accuracy_ranked")
DTYPES = ("float32", "bfloat16")
REMAT = ("none", "full", "dots")
ATTENTION_IMPLS = ATTENTION_IMPLEMENTATIONS


class ConfigError(ValueError):
    """The config has values out of range or fields that contradict each other."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid config:\n  " + "\n  ".join(self.problems))


# Table formats of config.data.table ("" = not used: TinyLLM files or synthetic).
TABLE_FORMATS = ("", "jsonl", "csv", "parquet", "hf")
ANSWER_FORMATS = ("auto", "text", "letter", "index")


@dataclasses.dataclass(frozen=True)
class TableSpec:
    """Your own multiple-choice data: one table per split and a column mapping."""

    format: str = ""
    # hf: a save_to_disk directory or a hub id; files: the directory that
    # relative split paths are resolved against ("" = as given).
    path: str = ""
    hf_config: str = ""  # load_dataset's config name for a hub id
    # files: each split's file; hf: each split's name ("" = train, validation, test).
    train: str = ""
    valid: str = ""
    test: str = ""
    question: str = "question"
    # One name: a list column (in CSV a JSON list); several: one text column per option.
    choices: tuple[str, ...] = ("choices",)
    answer: str = "answer"
    answer_format: str = "auto"  # text of a choice, letter a/A.., 0-based index, or auto
    # One column per teacher in config.data.teachers order; "" = from rationale_store.
    rationales: tuple[str, ...] = ()
    id: str = ""  # "" = ids <name>-<split>-<row>


@dataclasses.dataclass(frozen=True)
class DataSpec:
    name: str = "synthetic"
    # Root of the TinyLLM files (the datasets' manual dir); unused for synthetic.
    data_dir: str = ""
    # <store>/<dataset>/<teacher>/<split>.jsonl written by tinyllm_jax.teachers.
    rationale_store: str = ""
    # A store record generated for another question than its id's: "refuse" or "drop".
    store_mismatch: str = "refuse"
    use_tfds: bool = False
    tfds_data_dir: str = ""
    teachers: tuple[str, ...] = ()
    answer_prefix: str = DEFAULT_ANSWER_PREFIX
    # One per teacher; () = "explain: ", "rationale: ", ... (resolved by `parse`).
    teacher_prefixes: tuple[str, ...] = ()
    label_source: str = "gold"  # or "teacher": train on the teachers' stated answers
    drop_disagreeing: bool = False
    max_input_len: int = 512
    max_target_len: int = 256
    packing: bool = True
    packed_input_len: int = 0  # 0 = chosen from the data
    packed_target_len: int = 0
    tokenizer: str = "t5"  # t5, synthetic, byte, a directory or an HF hub id
    seed: int = 0
    train_fraction: float = 1.0  # data-efficiency runs train on a prefix of train
    # "multitask" (answer + one rationale task per teacher) or "rationale_then_answer"
    # (one target: rationale, separator, answer; data/rationale_then_answer.py).
    student_mode: str = "multitask"
    synthetic: synthetic.SyntheticConfig = dataclasses.field(
        default_factory=synthetic.SyntheticConfig)
    table: TableSpec = dataclasses.field(default_factory=TableSpec)


@dataclasses.dataclass(frozen=True)
class LossSpec:
    answer_weight: float = 1.0  # gamma
    rationale_weights: tuple[float, ...] = ()  # alpha_k, one per teacher; () = all 1.0
    z_loss: float = 0.0
    label_smoothing: float = 0.0


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    name: str = "adamw"  # or "adafactor"
    lr: float = 5e-5  # the paper's
    schedule: str = "constant"  # "constant", "linear" or "cosine" decay after warm-up
    warmup_steps: int = 0
    end_lr_fraction: float = 0.0
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    clip_norm: float = 1.0  # 0 disables
    accumulate_steps: int = 1


@dataclasses.dataclass(frozen=True)
class WandbSpec:
    """Weights & Biases logging (tinyllm_jax/tracking.py); off while `project` is ""."""

    project: str = ""
    name: str = ""  # the run's display name; "" = W&B's own
    entity: str = ""  # team or user; "" = the logged-in user's default
    mode: str = ""  # "online", "offline" or "disabled"; "" = WANDB_MODE or online


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    steps: int = 1000
    # > 0: train for this many passes over the training rows instead, so runs
    # whose tasks pack into different row counts see each example equally often.
    epochs: float = 0.0
    batch_size: int = 16  # global rows per step (packed rows hold several pairs)
    log_every: int = 50
    eval_every: int = 500  # 0 = no evaluation during training
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    keep_best: bool = True
    async_checkpoints: bool = True
    nonfinite: str = "stop"  # "stop" or "skip"
    progress_bar: bool = True
    plot: bool = True
    wandb: WandbSpec = dataclasses.field(default_factory=WandbSpec)
    # Steps to capture in a JAX profiler trace under <workdir>/profile: "5",
    # "5-7" or "5,6" (one consecutive range); "" = none.
    profile_steps: str = ""
    # Persistent XLA compilation cache: "" = off, "workdir" = <workdir>/compilation_cache,
    # else a directory (tinyllm_jax.compile_cache).
    compilation_cache: str = ""
    # Multi-host: hosts agree on a stop request every this many steps
    # (tinyllm_jax.stop_agreement); 1 = the step it arrives.
    preemption_sync_every: int = 1


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    batch_size: int = 64
    # Batches shortest pair first, each padded to its own bucketed length (a
    # few compiled shapes) instead of every batch to the longest pair.
    by_length: bool = True
    max_new_tokens: int = 0  # 0 = longest gold answer + 8
    splits: tuple[str, ...] = ("valid",)
    final_split: str = "test"  # "" = no final evaluation
    rank_choices: bool = True  # also report rank-classification accuracy
    # Validation metric that picks the best checkpoint ("accuracy": the decoded
    # gold, as the reference; "accuracy_strict": the raw gold text).
    best_metric: str = "accuracy"
    rationales: bool = False  # also decode each teacher prefix at --mode=eval
    # How answers (and --mode=eval rationales) are decoded, with HF generate's
    # meanings and defaults (evaluation/decode_options.py): greedy unless
    # num_beams > 1 (beam search) or do_sample (sampling).
    num_beams: int = DecodeOptions.num_beams
    length_penalty: float = DecodeOptions.length_penalty
    early_stopping: bool = False  # True/False here; Student.generate also takes "never"
    do_sample: bool = DecodeOptions.do_sample
    temperature: float = DecodeOptions.temperature
    top_k: int = DecodeOptions.top_k
    top_p: float = DecodeOptions.top_p
    seed: int = DecodeOptions.seed  # the sampling seed


@dataclasses.dataclass(frozen=True)
class MeshSpec:
    data: int = -1  # -1: the devices the other axes leave
    fsdp: int = 1
    tensor: int = 1


@dataclasses.dataclass(frozen=True)
class DistributedSpec:
    # "auto": initialise when the environment names a cluster (TPU pod, SLURM,
    # JAX_COORDINATOR_ADDRESS); "yes" always; "no" never.
    initialize: str = "auto"
    coordinator_address: str = ""
    num_processes: int = 0
    process_id: int = -1


@dataclasses.dataclass(frozen=True)
class RunSpec:
    seed: int = 0
    init_from: str = ""  # HF T5 directory or hub id to start from ("" = random init)
    model: T5Config = dataclasses.field(default_factory=T5Config)
    data: DataSpec = dataclasses.field(default_factory=DataSpec)
    loss: LossSpec = dataclasses.field(default_factory=LossSpec)
    optimizer: OptimizerSpec = dataclasses.field(default_factory=OptimizerSpec)
    train: TrainSpec = dataclasses.field(default_factory=TrainSpec)
    eval: EvalSpec = dataclasses.field(default_factory=EvalSpec)
    mesh: MeshSpec = dataclasses.field(default_factory=MeshSpec)
    distributed: DistributedSpec = dataclasses.field(default_factory=DistributedSpec)



# config.train keys that fill EvalSpec, and the EvalSpec field each fills.
EVAL_KEYS = {
    "eval_batch_size": "batch_size", "eval_by_length": "by_length",
    "eval_max_new_tokens": "max_new_tokens", "eval_splits": "splits",
    "final_eval_split": "final_split", "rank_choices": "rank_choices",
    "best_metric": "best_metric", "eval_rationales": "rationales",
    "eval_num_beams": "num_beams", "eval_length_penalty": "length_penalty",
    "eval_early_stopping": "early_stopping", "eval_do_sample": "do_sample",
    "eval_temperature": "temperature", "eval_top_k": "top_k", "eval_top_p": "top_p",
    "eval_seed": "seed",
}
SECTIONS = {"data": DataSpec, "loss": LossSpec, "optimizer": OptimizerSpec, "train": TrainSpec,
            "mesh": MeshSpec, "distributed": DistributedSpec}




def field_default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    return field.default_factory()  # type: ignore[misc]


def config_defaults() -> dict[str, Any]:
    """Every section's default values in the ConfigDict layout (no model section)."""
    out: dict[str, Any] = {"seed": RunSpec.seed, "init_from": RunSpec.init_from}
    for name, cls in SECTIONS.items():
        out[name] = {f.name: field_default(f) for f in dataclasses.fields(cls)}
    out["data"]["synthetic"] = {}  # only overrides of SyntheticConfig's own defaults
    out["train"]["wandb"] = dataclasses.asdict(WandbSpec())
    out["data"]["table"] = {f.name: field_default(f) for f in dataclasses.fields(TableSpec)}
    for key, field in EVAL_KEYS.items():
        out["train"][key] = field_default(next(f for f in dataclasses.fields(EvalSpec)
                                          if f.name == field))
    return out


