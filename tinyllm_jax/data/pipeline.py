"""The data side of training, driven by `config.data` (see docs/design.md).

    examples, report = load_examples(cfg.data, "train")
    tokenizer = tokenizer_for(cfg.data)
    features, freport = build_features(cfg.data, examples, tokenizer)
    it = make_iterator(cfg.data, features, batch_size=cfg.train.batch_size)
    for batch in it: ...                       # it.get_state() goes into checkpoints

    eval_feats, _ = build_features(cfg.data, valid_examples, tokenizer, tasks=(ANSWER_TASK,))
    for eb in eval_batches(eval_feats, batch_size=64): ...  # eb.example_ids joins predictions

Every function takes the ConfigDict (or a plain dict / object with the same
keys); readers are imported inside the functions so this module loads even
where an optional reader's dependencies are missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tinyllm_jax.data.example import Example
from tinyllm_jax.data.features import TaskFeature, build_task_features, feature_lengths
from tinyllm_jax.data.iterator import BatchIterator
from tinyllm_jax.data.packing import auto_packed_lengths
from tinyllm_jax.data.report import DataReport
from tinyllm_jax.tokenizers import Tokenizer, load_tokenizer

_MISSING = object()


def cfg_get(cfg: Any, key: str, default: Any = _MISSING) -> Any:
    """`cfg[key]` for a ConfigDict, dict or attribute object, else `default`."""
    if callable(getattr(cfg, "get", None)):  # dict and ConfigDict
        value = cfg.get(key, _MISSING)
    else:
        value = getattr(cfg, key, _MISSING)
    if value is _MISSING:
        if default is _MISSING:
            raise ValueError(f"config.data.{key} is not set")
        return default
    return value


def _teachers(data_cfg: Any) -> tuple[str, ...]:
    teachers = cfg_get(data_cfg, "teachers", ())
    if isinstance(teachers, str):  # "flan,llama" from a command line
        teachers = [t for t in teachers.replace("+", ",").split(",") if t]
    return tuple(teachers)


def load_examples(data_cfg: Any, split: str) -> tuple[list[Example], DataReport]:
    """One split as Examples: synthetic, TinyLLM files (+ store) or TFDS."""
    name = cfg_get(data_cfg, "name")
    teachers = _teachers(data_cfg)
    label_source = cfg_get(data_cfg, "label_source", "gold")
    drop_disagreeing = bool(cfg_get(data_cfg, "drop_disagreeing", False))
    if name == "synthetic":
        from tinyllm_jax.data import synthetic
        from tinyllm_jax.data.tinyllm import apply_label_options

        # Programmatic teachers come from the generator; any other teacher
        # name is read from the rationale store and joined by example id.
        own = tuple(t for t in teachers if t in synthetic.TEACHERS)
        stored = tuple(t for t in teachers if t not in synthetic.TEACHERS)
        syn_cfg = synthetic.config_from(cfg_get(data_cfg, "synthetic", None), own)
        examples, report = synthetic.generate_split(split, syn_cfg, own)
        if stored:
            examples = _join_store(data_cfg, examples, stored, split, report)
        # Same label options, same report keys as the TinyLLM reader.
        examples = apply_label_options(
            examples,
            teachers,
            label_source=label_source,
            drop_disagreeing=drop_disagreeing,
            report=report,
        )
    else:
        data_dir = cfg_get(data_cfg, "data_dir", None)
        if not data_dir:
            raise ValueError(
                f"config.data.data_dir is not set: dataset {name!r} is read from a TinyLLM "
                "data root such as ../shared/data/tinyllm (or use name='synthetic')"
            )
        store_dir = cfg_get(data_cfg, "rationale_store", None) or None
        if cfg_get(data_cfg, "use_tfds", False):
            from tinyllm_jax.data.tfds_builders import load_tfds_split

            tfds_dir = cfg_get(data_cfg, "tfds_data_dir", None)
            if not tfds_dir:
                raise ValueError(
                    "config.data.use_tfds is set but config.data.tfds_data_dir is empty: "
                    "name the directory the array_record files are (or will be) written to"
                )
            examples, report = load_tfds_split(
                name,
                split,
                tfds_dir,
                data_dir,
                teachers,
                label_source=label_source,
                drop_disagreeing=drop_disagreeing,
                store_dir=store_dir,
            )
        else:
            from tinyllm_jax.data.tinyllm import read_split

            examples, report = read_split(
                data_dir,
                name,
                split,
                teachers,
                label_source=label_source,
                drop_disagreeing=drop_disagreeing,
                store_dir=store_dir,
            )
    return _train_prefix(data_cfg, split, examples, report)


def _train_prefix(
    data_cfg: Any, split: str, examples: list[Example], report: DataReport
) -> tuple[list[Example], DataReport]:
    """Data-efficiency runs train on the first `train_fraction` of train."""
    fraction = float(cfg_get(data_cfg, "train_fraction", 1.0))
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"config.data.train_fraction must be in (0, 1], got {fraction}")
    if split != "train" or fraction == 1.0:
        return examples, report
    keep = max(1, round(fraction * len(examples)))
    report.add("train_fraction_dropped", len(examples) - keep)
    return examples[:keep], report


def _join_store(
    data_cfg: Any, examples: list[Example], teachers: tuple[str, ...], split: str,
    report: DataReport,
) -> list[Example]:
    """Add rationale-store teachers to generated examples, in config order."""
    import dataclasses

    from tinyllm_jax.data import synthetic
    from tinyllm_jax.data.store import read_store, store_path
    from tinyllm_jax.data.tinyllm import Question, store_outputs

    store_dir = cfg_get(data_cfg, "rationale_store", None)
    if not store_dir:
        raise ValueError(
            f"config.data.teachers names {list(teachers)}, which are not synthetic teachers "
            f"({sorted(synthetic.TEACHERS)}); set config.data.rationale_store to the directory "
            "holding their generated rationales"
        )
    questions = [Question(e.id, e.question, e.choices, e.answer, i) for i, e in enumerate(examples)]
    outputs = {}
    for t in teachers:
        path = store_path(store_dir, "synthetic", t, split)
        if not path.exists():
            raise ValueError(f"{path}: no rationale store file for teacher {t!r}, split {split!r}")
        outputs[t] = store_outputs(t, read_store(path), questions, "synthetic/" + split, report)
    order = _teachers(data_cfg)
    joined = []
    for i, e in enumerate(examples):
        rationales = {**e.rationales, **{t: outputs[t][i].rationale for t in teachers}}
        answers = {**e.teacher_answers, **{t: outputs[t][i].answer for t in teachers}}
        joined.append(dataclasses.replace(
            e, rationales={t: rationales[t] for t in order if t in rationales},
            teacher_answers={t: answers[t] for t in order if t in answers},
        ))
    return joined


def tokenizer_for(data_cfg: Any) -> Tokenizer:
    return load_tokenizer(cfg_get(data_cfg, "tokenizer", "byte"))


def build_features(
    data_cfg: Any,
    examples: Sequence[Example],
    tokenizer: Tokenizer,
    *,
    tasks: Sequence[int] | None = None,
) -> tuple[list[TaskFeature], DataReport]:
    """Tokenized pairs for every task (or `tasks`), with the config's prefixes/limits."""
    prefixes = cfg_get(data_cfg, "teacher_prefixes", None)
    return build_task_features(
        examples,
        tokenizer,
        teachers=_teachers(data_cfg),
        answer_prefix=cfg_get(data_cfg, "answer_prefix", "predict: "),
        teacher_prefixes=tuple(prefixes) if prefixes else None,
        max_input_len=int(cfg_get(data_cfg, "max_input_len", 512)),
        max_target_len=int(cfg_get(data_cfg, "max_target_len", 256)),
        tasks=tasks,
    )


def _length_setting(data_cfg: Any, key: str, limit_key: str) -> int | None:
    value = cfg_get(data_cfg, key, "auto")
    if value in (None, "auto", 0):
        return None
    try:
        value = int(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"config.data.{key} must be an int or 'auto', got {value!r}") from e
    limit = int(cfg_get(data_cfg, limit_key, 0))
    if value < limit:
        raise ValueError(
            f"config.data.{key}={value} is below {limit_key}={limit}: a pair of the maximum "
            f"length would not fit a row; raise it or use 'auto'"
        )
    return value


def row_lengths(data_cfg: Any, features: Sequence[TaskFeature]) -> tuple[int, int]:
    """(input, target) row lengths: packed (fixed or 'auto') or the per-pair limits."""
    if not cfg_get(data_cfg, "packing", True):
        return int(cfg_get(data_cfg, "max_input_len", 512)), int(
            cfg_get(data_cfg, "max_target_len", 256)
        )
    li, lt = feature_lengths(features)
    return auto_packed_lengths(
        li,
        lt,
        packed_input_len=_length_setting(data_cfg, "packed_input_len", "max_input_len"),
        packed_target_len=_length_setting(data_cfg, "packed_target_len", "max_target_len"),
        seed=int(cfg_get(data_cfg, "seed", 0)),
    )


def make_iterator(
    data_cfg: Any,
    features: Sequence[TaskFeature],
    *,
    batch_size: int,
    seed: int | None = None,
    num_epochs: int | None = None,
    lengths: tuple[int, int] | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
) -> BatchIterator:
    """The resumable training iterator; `lengths` overrides `row_lengths`."""
    input_len, target_len = lengths or row_lengths(data_cfg, features)
    return BatchIterator(
        features,
        batch_size=batch_size,
        input_len=input_len,
        target_len=target_len,
        packing=bool(cfg_get(data_cfg, "packing", True)),
        seed=int(cfg_get(data_cfg, "seed", 0) if seed is None else seed),
        num_epochs=num_epochs,
        process_index=process_index,
        process_count=process_count,
    )

