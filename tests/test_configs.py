"""Every config file builds; the CLI rejects typos and bad flags clearly."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tinyllm_jax.configs import parse_arg, split_teachers
from tinyllm_jax.spec import ConfigError, parse

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted([*(REPO / "configs").glob("*.py"), *(REPO / "configs" / "experiments").glob("*.py")])


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module  # the module itself: the test reads its docstring too


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_builds_and_documents_its_command(path):
    module = _load(path)
    assert "python -m tinyllm_jax.main --config=configs/" in (module.__doc__ or "")
    cfg = module.get_config(None)
    parse(cfg, reads_data=False)  # every field valid (data files are not read here)
    assert cfg.data.name and (cfg.train.steps > 0 or cfg.train.epochs > 0)


@pytest.mark.parametrize("size,d_model", [("small", 512), ("base", 768), ("large", 1024)])
def test_dataset_config_sizes_and_teachers(size, d_model):
    cfg = _load(REPO / "configs" / "obqa.py").get_config(f"size={size},teachers=flan")
    assert cfg.model.d_model == d_model and cfg.data.teachers == ("flan",)
    assert _load(REPO / "configs" / "piqa.py").get_config(None).data.teachers == ("flan",)


def test_parse_arg_errors():
    assert parse_arg("size=base", size="small") == {"size": "base"}
    with pytest.raises(ValueError, match="unknown config argument 'szie'"):
        parse_arg("szie=base", size="small")
    with pytest.raises(ValueError, match="is not key=value"):
        parse_arg("base", size="small")
    assert split_teachers("flan+llama") == ("flan", "llama") and split_teachers("none") == ()


def _main(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinyllm_jax.main", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_cli_rejects_mistyped_override(tmp_path):
    r = _main("--config=configs/tiny.py", f"--workdir={tmp_path}", "--config.train.lr=0.1")
    assert r.returncode != 0
    assert r.returncode == 2 and "lr" in r.stderr and "Traceback" not in r.stderr
    # The section's real fields are listed, and the listing of all fields exists.
    assert "config.train has no field 'lr'; its fields: [" in r.stderr
    assert "--helpfull" not in r.stderr and "--mode=print_config" in r.stderr


def test_cli_requires_workdir_and_names_bad_data_dir(tmp_path):
    r = _main("--config=configs/tiny.py")
    assert r.returncode == 2 and "--workdir is required" in r.stderr
    r = _main("--config=configs/obqa.py:size=tiny", f"--workdir={tmp_path}",
              f"--config.data.data_dir={tmp_path / 'nowhere'}")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "nowhere" in r.stderr


def test_experiment_grids_and_report_table(tmp_path):
    import json

    from experiments.grids import GRIDS
    from experiments.report import load_runs, table

    names = [n for grid in GRIDS.values() for n, _, _ in grid()]
    # (5 methods + equal-compute control) x 3 seeds; 2 x 3 fractions x 3;
    # 3 alphas x 3; (4 datasets x 4 + piqa x 2) x 3; 4 rationale-then-answer runs x 3.
    assert len(names) == len(set(names)) == 18 + 18 + 9 + 54 + 12
    for seed, acc in ((0, 0.5), (1, 0.7)):
        d = tmp_path / f"synthetic-both-s{seed}"
        d.mkdir()
        (d / "run.json").write_text(json.dumps({"name": d.name, "wall_s": 10.0}))
        (d / "summary.json").write_text(json.dumps(
            {"test_accuracy": acc, "test_accuracy_ranked": acc, "test_chance": 0.25}))
    text = table(load_runs(tmp_path))
    assert "| synthetic-both | 2 | 60.0 ± 14.1 | 60.0 ± 14.1 | 25.0 | 10 |" in text


def test_epochs_set_the_step_count_from_the_packed_rows():
    from tinyllm_jax.configs import load_config_file
    from tinyllm_jax.data import pipeline
    from tinyllm_jax.data.bundle import load_data
    from tinyllm_jax.train import train_steps

    cfg = load_config_file(Path("configs/experiments/synthetic.py"), "method=both,seed=0")
    spec = parse(cfg)
    bundle = load_data(spec.data, (), model_vocab=spec.model.vocab_size)
    it = pipeline.make_iterator(spec.data, bundle.train_features, batch_size=spec.train.batch_size)
    per_epoch = it.batches_in_epoch(0)
    assert per_epoch > 1 and train_steps(spec.train, it) == 3 * per_epoch
    cfg.train.epochs = 0.5
    assert train_steps(parse(cfg).train, it) == -(-per_epoch // 2)
    cfg.train.epochs, cfg.train.steps = 0.0, 7
    assert train_steps(parse(cfg).train, it) == 7
    cfg.train.epochs = -1.0
    with pytest.raises(ConfigError, match=r"config.train.epochs = -1.0: must be a finite number >= 0"):
        parse(cfg)


@pytest.mark.skipif(not (REPO.parent / "shared" / "data" / "tinyllm" / "arc").is_dir(),
                    reason="needs ../shared/data/tinyllm (the real TinyLLM datasets)")
def test_real_experiment_config_trains_the_same_epochs_for_every_method():
    from tinyllm_jax.configs import load_config_file
    from tinyllm_jax.data import pipeline
    from tinyllm_jax.data.bundle import load_data
    from tinyllm_jax.train import train_steps

    path = REPO / "configs" / "experiments" / "real.py"
    assert load_config_file(path, "dataset=piqa,method=flan").data.train_fraction == 0.25
    assert load_config_file(path, "dataset=piqa,method=flan,fraction=1").data.train_fraction == 1.0
    steps = {}
    for method in ("answer", "both"):
        cfg = load_config_file(path, f"dataset=arc,method={method},seed=1")
        cfg.data.data_dir = str(REPO.parent / "shared" / "data" / "tinyllm")
        spec = parse(cfg)
        bundle = load_data(spec.data, (), model_vocab=spec.model.vocab_size)
        it = pipeline.make_iterator(spec.data, bundle.train_features,
                                    batch_size=spec.train.batch_size)
        steps[method] = train_steps(spec.train, it)
        assert steps[method] == 2 * it.batches_in_epoch(0)
        assert max(pipeline.feature_lengths(bundle.train_features)[1]) <= cfg.data.max_target_len
    # Three tasks per question: more rows, so more steps, for the same two epochs.
    assert steps["both"] > 2 * steps["answer"]
