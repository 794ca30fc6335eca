"""The config parsed once into typed specs: defaults in one place, every
range and relation checked at start-up with one line per problem."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from tinyllm_jax import spec as spec_lib
from tinyllm_jax.configs import base_config, load_config_file
from tinyllm_jax.spec import ConfigError, parse

REPO = Path(__file__).resolve().parents[1]


def _tiny():
    return load_config_file(REPO / "configs" / "tiny.py")


def _problems(cfg) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(cfg)
    return info.value.problems


def _set(cfg, dotted: str, value) -> None:
    node = cfg
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value


def test_base_config_carries_the_spec_defaults():
    # One place for defaults: a base config with nothing changed parses to the
    # dataclass defaults (model shape and dataset aside).
    s = parse(base_config(dataset="synthetic", teachers=()))
    assert s.loss == spec_lib.LossSpec()
    assert s.optimizer == spec_lib.OptimizerSpec()
    assert s.train == spec_lib.TrainSpec()
    assert s.eval == spec_lib.EvalSpec()
    assert s.mesh == spec_lib.MeshSpec()
    assert s.distributed == spec_lib.DistributedSpec()
    defaults = dataclasses.asdict(spec_lib.DataSpec())
    got = dataclasses.asdict(s.data)
    for key in ("max_input_len", "max_target_len", "answer_prefix", "packing", "label_source",
                "train_fraction", "packed_input_len"):
        assert got[key] == defaults[key]


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.py"))
                         + sorted((REPO / "configs" / "experiments").glob("*.py")),
                         ids=lambda p: p.stem)
def test_every_shipped_config_parses(path):
    s = parse(load_config_file(path), reads_data=False)
    assert isinstance(s.model.d_model, int) and s.train.batch_size >= 1
    assert len(s.data.teacher_prefixes) == len(s.data.teachers)


def test_specs_are_frozen_and_parse_passes_a_spec_through():
    s = parse(_tiny())
    assert parse(s) is s
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.train.steps = 3  # type: ignore[misc]


def test_teacher_lists_have_one_syntax():
    assert spec_lib.parse_teachers("flan+llama") == ("flan", "llama")
    assert spec_lib.parse_teachers("flan,llama") == ("flan", "llama")
    assert spec_lib.parse_teachers("none") == spec_lib.parse_teachers("") == ()
    assert spec_lib.parse_teachers(["a", "b"]) == ("a", "b")


# (field, bad value, text the one-line message must contain)
BAD_VALUES = [
    ("loss.rationale_weights", (-1.0, 1.0), "config.loss.rationale_weights[0] = -1.0"),
    ("loss.rationale_weights", (float("nan"), 1.0), "config.loss.rationale_weights[0] = nan"),
    ("loss.rationale_weights", (0.5,), "one weight per teacher"),
    ("loss.answer_weight", -0.5, "config.loss.answer_weight = -0.5: must be a finite number >= 0"),
    ("loss.answer_weight", float("inf"), "config.loss.answer_weight = inf: must be a finite"),
    ("loss.label_smoothing", 1.0, "config.loss.label_smoothing = 1.0"),
    ("optimizer.lr", 0.0, "config.optimizer.lr = 0.0: must be a finite number > 0"),
    ("optimizer.lr", -1e-3, "config.optimizer.lr = -0.001"),
    ("optimizer.lr", float("nan"), "config.optimizer.lr = nan: must be a finite number"),
    ("optimizer.b2", 1.0, "config.optimizer.b2 = 1.0: must be a finite number >= 0 and < 1"),
    ("optimizer.eps", 0.0, "config.optimizer.eps = 0.0"),
    ("optimizer.name", "sgd", "config.optimizer.name = 'sgd': must be one of ['adamw', "),
    ("optimizer.schedule", "step", "config.optimizer.schedule = 'step'"),
    ("optimizer.accumulate_steps", 0, "config.optimizer.accumulate_steps = 0: must be >= 1"),
    ("optimizer.accumulate_steps", 3, "accumulate_steps = 3: must divide config.train.batch_size"),
    ("optimizer.warmup_steps", -1, "config.optimizer.warmup_steps = -1"),
    ("optimizer.end_lr_fraction", 2.0, "config.optimizer.end_lr_fraction = 2.0"),
    ("model.dropout_rate", 1.0, "config.model.dropout_rate = 1.0: must be a finite number >= 0 and < 1"),
    ("model.dropout_rate", -0.1, "config.model.dropout_rate = -0.1"),
    ("model.dtype", "float16", "config.model.dtype = 'float16': must be one of"),
    ("model.remat", "some", "config.model.remat = 'some'"),
    ("model.num_heads", 0, "config.model.num_heads = 0: must be >= 1"),
    ("model.scan_layers", None, "config.model.scan_layers = None: must be True or False"),
    ("train.log_every", 0, "config.train.log_every = 0: must be >= 1"),
    ("train.checkpoint_every", 0, "config.train.checkpoint_every = 0: must be >= 1"),
    ("train.eval_every", -5, "config.train.eval_every = -5: must be >= 0"),
    ("train.steps", 0, "config.train.steps = 0: must be >= 1"),
    ("train.epochs", float("nan"), "config.train.epochs = nan"),
    ("train.batch_size", 0, "config.train.batch_size = 0: must be >= 1"),
    ("train.keep_checkpoints", 0, "config.train.keep_checkpoints = 0"),
    ("train.nonfinite", "stp", "config.train.nonfinite = 'stp': must be one of ['stop', 'skip']"),
    ("train.eval_batch_size", 0, "config.train.eval_batch_size = 0"),
    ("train.eval_max_new_tokens", -1, "config.train.eval_max_new_tokens = -1"),
    ("train.best_metric", "bleu", "config.train.best_metric = 'bleu': must be one of"),
    ("train.eval_splits", ("dev",), "config.train.eval_splits = ('dev',)"),
    ("train.final_eval_split", "dev", "config.train.final_eval_split = 'dev'"),
    ("data.train_fraction", 0.0, "config.data.train_fraction = 0.0: must be a finite number > 0"),
    ("data.train_fraction", 1.5, "config.data.train_fraction = 1.5"),
    ("data.label_source", "majority", "config.data.label_source = 'majority'"),
    ("data.max_input_len", 0, "config.data.max_input_len = 0"),
    ("data.packed_input_len", 64, "config.data.packed_input_len = 64: must be 0"),
    ("data.teacher_prefixes", ("explain: ",), "one prefix per teacher"),
    ("data.teacher_prefixes", ("predict: ", "why: "), "config.data.teacher_prefixes"),
    ("data.name", "../obqa", "config.data.name = '../obqa': must name a dataset"),
    ("data.tokenizer", "", "config.data.tokenizer = ''"),
    ("data.teachers", ("algebra", "algebra"), "names must be non-empty and distinct"),
    ("data.teachers", ("algebra", "gpt4"), "config.data.rationale_store = ''"),
    ("mesh.data", 0, "config.mesh.data = 0"),
    ("distributed.initialize", "maybe", "config.distributed.initialize = 'maybe'"),
]


@pytest.mark.parametrize("field,value,expected", BAD_VALUES,
                         ids=[f"{f}={v!r}" for f, v, _ in BAD_VALUES])
def test_bad_value_is_one_line_naming_field_value_and_rule(field, value, expected):
    cfg = _tiny()
    _set(cfg, field, value)
    problems = _problems(cfg)
    assert any(expected in p for p in problems), problems
    assert all("\n" not in p for p in problems)


def test_relations_between_fields():
    cfg = _tiny()
    cfg.train.best_metric = "accuracy_ranked"
    cfg.train.rank_choices = False
    assert any("accuracy_ranked is only computed" in p for p in _problems(cfg))

    cfg = _tiny()
    cfg.train.eval_splits = ("test",)
    assert any("chosen on the 'valid' evaluation" in p for p in _problems(cfg))
    cfg.train.keep_best = False
    parse(cfg)  # no best checkpoint wanted: any split may be evaluated

    cfg = _tiny()
    cfg.loss.answer_weight = 0.0
    cfg.loss.rationale_weights = (0.0, 0.0)
    assert any("every task weight is 0" in p for p in _problems(cfg))

    cfg = _tiny()
    cfg.data.teachers = ()
    cfg.data.label_source = "teacher"
    assert any("needs at least one teacher" in p for p in _problems(cfg))

    cfg = _tiny()
    cfg.mesh.data, cfg.mesh.fsdp = -1, -1
    assert any("at most one axis may be -1" in p for p in _problems(cfg))

    cfg = _tiny()
    cfg.data.name = "obqa"  # a real dataset needs its files
    assert any("config.data.data_dir = ''" in p for p in _problems(cfg))
    parse(cfg, reads_data=False)  # the compile check reads no files


def test_every_problem_is_reported_at_once():
    cfg = _tiny()
    cfg.optimizer.lr = 0.0
    cfg.train.log_every = 0
    cfg.model.dropout_rate = 2.0
    assert len(_problems(cfg)) == 3


def test_unknown_fields_and_missing_sections():
    cfg = _tiny()
    with cfg.train.unlocked():
        cfg.train.lr = 1e-3  # belongs in config.optimizer
    assert any("config.train: unknown field(s) ['lr']" in p for p in _problems(cfg))
    cfg = _tiny()
    with cfg.unlocked():
        del cfg["train"]
    assert any("section(s) ['train'] are missing" in p for p in _problems(cfg))


def test_types_are_checked_with_the_field_named():
    cfg = _tiny().to_dict()
    cfg["train"]["steps"] = "ten"
    cfg["train"]["progress_bar"] = "yes"
    cfg["optimizer"]["lr"] = True
    problems = _problems(cfg)
    assert any("config.train.steps = 'ten': must be an integer" in p for p in problems)
    assert any("config.train.progress_bar = 'yes': must be True or False" in p for p in problems)
    assert any("config.optimizer.lr = True: must be a number" in p for p in problems)


def test_parsed_values_are_resolved_for_consumers():
    s = parse(_tiny())
    assert s.data.teacher_prefixes == ("explain: ", "rationale: ")
    cfg = _tiny()
    cfg.loss.rationale_weights = (0.5, 2)
    assert parse(cfg).loss.rationale_weights == (0.5, 2.0)
    assert all(isinstance(w, float) and math.isfinite(w) for w in parse(cfg).loss.rationale_weights)


def test_training_validates_before_reading_data_or_creating_the_workdir(tmp_path):
    from tinyllm_jax.train import train_and_evaluate

    cfg = _tiny()
    cfg.data.name = "obqa"
    cfg.data.data_dir = str(tmp_path / "no-such-data")
    cfg.optimizer.lr = -1.0
    workdir = tmp_path / "wd"
    with pytest.raises(ConfigError, match=r"config\.optimizer\.lr = -1\.0"):
        train_and_evaluate(cfg, str(workdir))
    assert not workdir.exists()
