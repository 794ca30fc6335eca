"""ConfigDict -> RunSpec: every section read and checked, then the relations between them."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from tinyllm_jax.data import synthetic
from tinyllm_jax.data.features import teacher_prefixes_for
from tinyllm_jax.data.rationale_then_answer import STUDENT_MODES
from tinyllm_jax.evaluation.decode_options import DECODE_FIELDS, DecodeOptions
from tinyllm_jax.models.t5_config import T5Config
from tinyllm_jax.spec.fields import Fields, as_dict, split_known, text_tuple
from tinyllm_jax.spec.table import missing_splits, parse_table
from tinyllm_jax.spec.tracking import profile_steps, wandb_spec
from tinyllm_jax.spec.types import (
    ATTENTION_IMPLS,
    BEST_METRICS,
    DATASETS,
    DTYPES,
    EVAL_KEYS,
    REMAT,
    SECTIONS,
    SPLITS,
    ConfigError,
    DataSpec,
    DistributedSpec,
    EvalSpec,
    LossSpec,
    MeshSpec,
    OptimizerSpec,
    RunSpec,
    TrainSpec,
)


def parse_teachers(value: Any) -> tuple[str, ...]:
    """The one teacher-list syntax: a sequence of names, or "flan+llama" /
    "flan,llama" text; "" and "none" mean no teacher."""
    if isinstance(value, str):
        if value.strip() in ("", "none"):
            return ()
        value = value.replace(",", "+").split("+")
    if not isinstance(value, Sequence):
        raise ConfigError([f"config.data.teachers = {value!r}: must be a sequence of names "
                           "or text like 'flan+llama'"])
    return tuple(str(t).strip() for t in value)


def _model(values: dict[str, Any], problems: list[str]) -> T5Config:
    names = [f.name for f in dataclasses.fields(T5Config)]
    values = split_known(values, names, "config.model", problems)
    f = Fields(values, T5Config, "config.model", problems)
    fields: dict[str, Any] = {}
    for key in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads",
                "relative_attention_num_buckets", "relative_attention_max_distance"):
        fields[key] = f.integer(key, 1)
    decoder_layers = f.raw("num_decoder_layers")
    fields["num_decoder_layers"] = None if decoder_layers is None else f.integer(
        "num_decoder_layers", 1)
    fields["dropout_rate"] = f.number("dropout_rate", 0.0, 1.0, hi_open=True)
    fields["layer_norm_epsilon"] = f.number("layer_norm_epsilon", 0.0, lo_open=True)
    fields["feed_forward_proj"] = f.text("feed_forward_proj", ("relu", "gated-gelu"))
    fields["tie_word_embeddings"] = f.boolean("tie_word_embeddings")
    scale = f.raw("scale_decoder_outputs")
    fields["scale_decoder_outputs"] = None if scale is None else f.boolean("scale_decoder_outputs")
    fields["dtype"] = f.text("dtype", DTYPES)
    fields["remat"] = f.text("remat", REMAT)
    fields["attention_impl"] = f.text("attention_impl", ATTENTION_IMPLS)
    fields["scan_layers"] = f.boolean("scan_layers")
    return T5Config(**fields)


def _data(values: dict[str, Any], problems: list[str], reads_data: bool = True) -> DataSpec:
    names = [x.name for x in dataclasses.fields(DataSpec)]
    values = split_known(values, names, "config.data", problems)
    f = Fields(values, DataSpec, "config.data", problems)
    # Any dataset in the TinyLLM layout is read by its directory name; the
    # TFDS builders cover the known ones (DATASETS) and say so for others.
    name = f.text("name")
    if not name or "/" in name or "\\" in name or name.startswith("."):
        f.bad("name", name, "must name a dataset: 'synthetic' or a directory under "
              f"config.data.data_dir such as {list(DATASETS[1:])}")
    try:
        teachers = parse_teachers(f.raw("teachers"))
    except ConfigError as e:
        problems += e.problems
        teachers = ()
    if any(not t for t in teachers) or len(set(teachers)) != len(teachers):
        problems.append(f"config.data.teachers = {teachers!r}: names must be non-empty and "
                        "distinct")
    answer_prefix = f.text("answer_prefix")
    if not answer_prefix.strip():
        f.bad("answer_prefix", answer_prefix, "must be non-empty text, e.g. 'predict: '")
    given = text_tuple(f, "teacher_prefixes")
    prefixes: tuple[str, ...] = ()
    if given and len(given) != len(teachers):
        f.bad("teacher_prefixes", given, f"must give one prefix per teacher ({len(teachers)}: "
               f"{list(teachers)}) or be () for the defaults")
    else:
        try:
            prefixes = teacher_prefixes_for(teachers, given or None, answer_prefix)
        except ValueError as e:
            f.bad("teacher_prefixes", given, str(e))
    max_in = f.integer("max_input_len", 2)
    max_t = f.integer("max_target_len", 2)
    packed_in = f.integer("packed_input_len", 0)
    packed_t = f.integer("packed_target_len", 0)
    for key, value, limit, limit_key in (("packed_input_len", packed_in, max_in, "max_input_len"),
                                         ("packed_target_len", packed_t, max_t, "max_target_len")):
        if 0 < value < limit:
            f.bad(key, value, f"must be 0 (chosen from the data) or >= {limit_key}={limit}, "
                   "so that a pair of the maximum length fits a row")
    label_source = f.text("label_source", ("gold", "teacher"))
    if label_source == "teacher" and not teachers:
        f.bad("label_source", label_source, "'teacher' needs at least one teacher in "
               "config.data.teachers")
    student_mode = f.text("student_mode", STUDENT_MODES)
    if student_mode == "rationale_then_answer" and not teachers:
        f.bad("student_mode", student_mode, "'rationale_then_answer' needs at least one teacher "
              "in config.data.teachers (its targets are their rationales)")
    tokenizer = f.text("tokenizer")
    if not tokenizer:
        f.bad("tokenizer", tokenizer, "must name a tokenizer: t5, synthetic, byte, a "
               "directory or an HF hub id")
    data_dir, store = f.text("data_dir"), f.text("rationale_store")
    use_tfds, tfds_dir = f.boolean("use_tfds"), f.text("tfds_data_dir")
    table = parse_table(values.get("table"), name=name, teachers=teachers, store=store,
                        use_tfds=use_tfds, problems=problems)
    if reads_data and name != "synthetic" and not data_dir and not table.format:
        f.bad("data_dir", data_dir, f"dataset {name!r} is read from a TinyLLM data root: set "
               "--config.data.data_dir=/path/to/tinyllm (or use name='synthetic', or "
               "config.data.table for your own files)")
    if use_tfds and not tfds_dir:
        f.bad("tfds_data_dir", tfds_dir, "use_tfds=True needs the directory the array_record "
               "files are (or will be) written to")
    own = tuple(t for t in teachers if t in synthetic.TEACHERS)
    if name == "synthetic" and len(own) != len(teachers) and not store:
        others = [t for t in teachers if t not in synthetic.TEACHERS]
        f.bad("rationale_store", store, f"teachers {others} are not synthetic teachers "
               f"({sorted(synthetic.TEACHERS)}): name the store holding their rationales")
    try:
        syn = synthetic.config_from(values.get("synthetic"), own)
    except (ValueError, TypeError) as e:
        problems.append(f"config.data.synthetic: {e}")
        syn = synthetic.SyntheticConfig()
    return DataSpec(
        name=name, data_dir=data_dir, rationale_store=store,
        store_mismatch=f.text("store_mismatch", ("refuse", "drop")), use_tfds=use_tfds,
        tfds_data_dir=tfds_dir, teachers=teachers, answer_prefix=answer_prefix,
        teacher_prefixes=prefixes, label_source=label_source,
        drop_disagreeing=f.boolean("drop_disagreeing"), max_input_len=max_in,
        max_target_len=max_t, packing=f.boolean("packing"), packed_input_len=packed_in,
        packed_target_len=packed_t, tokenizer=tokenizer, seed=f.integer("seed"),
        train_fraction=f.number("train_fraction", 0.0, 1.0, lo_open=True), synthetic=syn,
        table=table,
        student_mode=student_mode,
    )


def _loss(values: dict[str, Any], teachers: tuple[str, ...], problems: list[str]) -> LossSpec:
    values = split_known(values, [x.name for x in dataclasses.fields(LossSpec)],
                          "config.loss", problems)
    f = Fields(values, LossSpec, "config.loss", problems)
    gamma = f.number("answer_weight", 0.0)
    raw = f.raw("rationale_weights")
    weights: tuple[float, ...] = ()
    if isinstance(raw, str) or not isinstance(raw, Sequence):
        f.bad("rationale_weights", raw, "must be a tuple of numbers, one per teacher")
    elif raw and len(raw) != len(teachers):
        f.bad("rationale_weights", tuple(raw), f"must give one weight per teacher "
               f"({len(teachers)}: {list(teachers)}) or be () for all 1.0")
    else:
        for i, w in enumerate(raw):
            if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) \
                    or w < 0:
                problems.append(f"config.loss.rationale_weights[{i}] = {w!r}: must be a finite "
                                "number >= 0 (a negative weight trains away from that teacher)")
        weights = tuple(float(w) for w in raw) if not any(
            p.startswith("config.loss.rationale_weights[") for p in problems) else ()
    all_weights = (gamma, *(weights or (1.0,) * len(teachers)))
    if not any(all_weights):
        problems.append(f"config.loss: every task weight is 0 (answer_weight={gamma}, "
                        f"rationale_weights={weights}): nothing would be trained")
    return LossSpec(answer_weight=gamma, rationale_weights=weights,
                    z_loss=f.number("z_loss", 0.0),
                    label_smoothing=f.number("label_smoothing", 0.0, 1.0, hi_open=True))


def _optimizer(values: dict[str, Any], problems: list[str]) -> OptimizerSpec:
    values = split_known(values, [x.name for x in dataclasses.fields(OptimizerSpec)],
                          "config.optimizer", problems)
    f = Fields(values, OptimizerSpec, "config.optimizer", problems)
    return OptimizerSpec(
        name=f.text("name", ("adamw", "adafactor")), lr=f.number("lr", 0.0, lo_open=True),
        schedule=f.text("schedule", ("constant", "linear", "cosine")),
        warmup_steps=f.integer("warmup_steps", 0), end_lr_fraction=f.number(
            "end_lr_fraction", 0.0, 1.0), weight_decay=f.number("weight_decay", 0.0),
        b1=f.number("b1", 0.0, 1.0, hi_open=True), b2=f.number("b2", 0.0, 1.0, hi_open=True),
        eps=f.number("eps", 0.0, lo_open=True), clip_norm=f.number("clip_norm", 0.0),
        accumulate_steps=f.integer("accumulate_steps", 1),
    )


def _train_and_eval(values: dict[str, Any], problems: list[str]) -> tuple[TrainSpec, EvalSpec]:
    known = [x.name for x in dataclasses.fields(TrainSpec)]
    values = split_known(values, known + list(EVAL_KEYS), "config.train", problems)
    f = Fields({k: v for k, v in values.items() if k in known}, TrainSpec, "config.train",
                problems)
    train = TrainSpec(
        steps=f.integer("steps", 0), epochs=f.number("epochs", 0.0),
        batch_size=f.integer("batch_size", 1), log_every=f.integer("log_every", 1),
        eval_every=f.integer("eval_every", 0), checkpoint_every=f.integer("checkpoint_every", 1),
        keep_checkpoints=f.integer("keep_checkpoints", 1), keep_best=f.boolean("keep_best"),
        async_checkpoints=f.boolean("async_checkpoints"),
        nonfinite=f.text("nonfinite", ("stop", "skip")),
        progress_bar=f.boolean("progress_bar"), plot=f.boolean("plot"),
        wandb=wandb_spec(values.get("wandb"), problems),
        compilation_cache=f.text("compilation_cache"),
        preemption_sync_every=f.integer("preemption_sync_every", 1),
    )
    if not train.epochs and train.steps < 1:
        f.bad("steps", train.steps, "must be >= 1 (or set config.train.epochs > 0)")
    train = dataclasses.replace(train, profile_steps=profile_steps(f, train.steps, train.epochs))
    e = Fields({EVAL_KEYS[k]: v for k, v in values.items() if k in EVAL_KEYS}, EvalSpec,
                "config.train", problems)
    # Messages name the ConfigDict keys a user types, not EvalSpec's fields.
    e.where = "config.train"
    key_of = {v: k for k, v in EVAL_KEYS.items()}

    def bad(field: str, value: Any, allowed: str) -> None:
        problems.append(f"config.train.{key_of[field]} = {value!r}: {allowed}")

    splits = e.raw("splits")
    if isinstance(splits, str) or not isinstance(splits, Sequence) or any(
            s not in SPLITS for s in splits):
        bad("splits", splits, f"must be a tuple of split names from {list(SPLITS)}")
        splits = ("valid",)
    final = e.raw("final_split")
    if final not in ("", *SPLITS):
        bad("final_split", final, f"must be one of {list(SPLITS)} or '' (no final evaluation)")
        final = "test"
    batch = e.raw("batch_size")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        bad("batch_size", batch, "must be an integer >= 1")
        batch = 64
    new = e.raw("max_new_tokens")
    if isinstance(new, bool) or not isinstance(new, int) or new < 0:
        bad("max_new_tokens", new, "must be an integer >= 0 (0 = longest gold answer + 8)")
        new = 0
    flags = {}
    for field in ("by_length", "rank_choices", "rationales"):
        v = e.raw(field)
        if not isinstance(v, bool):
            bad(field, v, "must be True or False")
            v = bool(e.defaults[field])
        flags[field] = v
    best = e.raw("best_metric")
    if best not in BEST_METRICS:
        bad("best_metric", best, f"must be one of {list(BEST_METRICS)}")
        best = "accuracy"
    elif best == "accuracy_ranked" and not flags["rank_choices"]:
        bad("best_metric", best, "accuracy_ranked is only computed with "
            "config.train.rank_choices=True")
    if train.keep_best and train.eval_every and "valid" not in splits:
        bad("splits", tuple(splits), "the best checkpoint is chosen on the 'valid' evaluation: "
            "add 'valid' or set config.train.keep_best=False")
    decoding = {k: e.raw(k) for k in DECODE_FIELDS}
    if not isinstance(decoding["early_stopping"], bool):
        bad("early_stopping", decoding["early_stopping"], "must be True or False")
        decoding["early_stopping"] = False
    for field, value, allowed in DecodeOptions(**decoding).problems():
        bad(field, value, allowed)
        decoding[field] = e.defaults[field]
    for k in ("length_penalty", "temperature", "top_p"):
        decoding[k] = float(decoding[k])
    return train, EvalSpec(batch_size=batch, by_length=flags["by_length"], max_new_tokens=new,
                           splits=tuple(splits), final_split=final,
                           rank_choices=flags["rank_choices"], best_metric=best,
                           rationales=flags["rationales"], **decoding)


def _mesh(values: dict[str, Any], problems: list[str]) -> MeshSpec:
    values = split_known(values, ("data", "fsdp", "tensor"), "config.mesh", problems)
    f = Fields(values, MeshSpec, "config.mesh", problems)
    dims = {k: f.integer(k, -1, allowed="must be >= 1, or -1 for the devices the other axes "
                         "leave") for k in ("data", "fsdp", "tensor")}
    for k, v in dims.items():
        if v == 0:
            f.bad(k, v, "must be >= 1, or -1 for the devices the other axes leave")
            dims[k] = 1
    if sum(v == -1 for v in dims.values()) > 1:
        problems.append(f"config.mesh = {dims}: at most one axis may be -1")
    return MeshSpec(**dims)


def _distributed(values: dict[str, Any], problems: list[str]) -> DistributedSpec:
    values = split_known(values, [x.name for x in dataclasses.fields(DistributedSpec)],
                          "config.distributed", problems)
    f = Fields(values, DistributedSpec, "config.distributed", problems)
    return DistributedSpec(
        initialize=f.text("initialize", ("auto", "yes", "no")),
        coordinator_address=f.text("coordinator_address"),
        num_processes=f.integer("num_processes", 0), process_id=f.integer("process_id", -1),
    )


def parse(config: Any, *, reads_data: bool = True) -> RunSpec:
    """The validated `RunSpec` of a ConfigDict (or nested mapping); a RunSpec
    passes through. Raises ConfigError listing every problem found.

    `reads_data=False` (the compile check, which reads no files) skips the
    checks that only matter to a run that reads its dataset."""
    if isinstance(config, RunSpec):
        return config
    problems: list[str] = []
    top = as_dict(config, "config", problems)
    top = split_known(top, ("seed", "init_from", "model", *SECTIONS), "config", problems)
    missing = [k for k in ("model", *SECTIONS) if k not in top]
    if missing and not problems:
        problems.append(f"config: the section(s) {missing} are missing; build the config with "
                        "tinyllm_jax.configs.base_config (see configs/tiny.py)")
    f = Fields(top, RunSpec, "config", problems)
    seed, init_from = f.integer("seed"), f.text("init_from")
    model = _model(as_dict(top.get("model"), "config.model", problems), problems)
    data = _data(as_dict(top.get("data"), "config.data", problems), problems, reads_data)
    loss = _loss(as_dict(top.get("loss"), "config.loss", problems), data.teachers, problems)
    optimizer = _optimizer(as_dict(top.get("optimizer"), "config.optimizer", problems), problems)
    train, evaluation = _train_and_eval(as_dict(top.get("train"), "config.train", problems),
                                        problems)
    mesh = _mesh(as_dict(top.get("mesh"), "config.mesh", problems), problems)
    distributed = _distributed(as_dict(top.get("distributed"), "config.distributed", problems),
                               problems)
    # Relations between sections.
    if train.batch_size % optimizer.accumulate_steps:
        problems.append(
            f"config.optimizer.accumulate_steps = {optimizer.accumulate_steps}: must divide "
            f"config.train.batch_size = {train.batch_size} (each micro-batch gets an equal share)")
    if reads_data:
        problems += missing_splits(data.table, ("train", *evaluation.splits,
                                                evaluation.final_split))
    if model.scan_layers and optimizer.name == "adafactor":
        # Adafactor clips and scales each array by its own RMS: on a stacked
        # array that RMS spans every layer, so the update differs from the
        # unrolled model's. AdamW is elementwise and gives the same update.
        problems.append(
            "config.model.scan_layers = True: not supported with config.optimizer.name = "
            "'adafactor' (its per-array RMS would span all layers of the stack); use "
            "optimizer 'adamw' or scan_layers=False")
    if problems:
        raise ConfigError(problems)
    return RunSpec(seed=seed, init_from=init_from, model=model, data=data, loss=loss,
                   optimizer=optimizer, train=train, eval=evaluation, mesh=mesh,
                   distributed=distributed)


def data_spec(section: Any) -> DataSpec:
    """A DataSpec from a `config.data` section alone (tools that need only data)."""
    if isinstance(section, DataSpec):
        return section
    problems: list[str] = []
    spec = _data(as_dict(section, "config.data", problems), problems)
    if problems:
        raise ConfigError(problems)
    return spec
