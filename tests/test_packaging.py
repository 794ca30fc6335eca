"""Packaging: what the core install needs, the extras, the console scripts, and the
package working without its optional dependencies (TFDS above all)."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tinyllm_jax.data.pipeline import load_examples
from tinyllm_jax.spec import data_spec

REPO = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib")
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
OPTIONAL = ("tensorflow-datasets", "array-record", "torch", "pyarrow", "datasets", "wandb",
            "sentencepiece")


def _names(requirements: list[str]) -> set[str]:
    return {r.split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower()
            for r in requirements}


def test_core_dependencies_leave_out_the_optional_ones():
    core = _names(PROJECT["dependencies"])
    assert not core & set(OPTIONAL), core & set(OPTIONAL)
    extras = PROJECT["optional-dependencies"]
    assert {"tfds", "data", "hf", "teachers", "tpu", "wandb", "test"} <= set(extras)
    assert {"tensorflow-datasets", "array-record"} <= _names(extras["tfds"])
    # The README's test command installs only [test]: it must hold what the tests import.
    assert {"tensorflow-datasets", "array-record", "torch", "pyarrow", "datasets", "pytest"} \
        <= _names(extras["test"])
    torch_pins = {r for name in extras for r in extras[name] if r.startswith("torch")}
    assert torch_pins == {"torch==2.13.0"}  # one pin, explained in the README


def test_console_scripts_name_callables():
    scripts = PROJECT["scripts"]
    assert {"tinyllm-train", "tinyllm-teachers", "tinyllm-export", "tinyllm-aot"} <= set(scripts)
    for name, target in scripts.items():
        module, attr = target.split(":")
        if module == "tinyllm_jax.main" or module.startswith("tinyllm_jax.teachers"):
            # Both define --config with absl, so one process cannot import
            # both: read the function definition instead.
            tree = ast.parse((REPO / (module.replace(".", "/") + ".py")).read_text())
            assert attr in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, name
        else:
            assert callable(getattr(importlib.import_module(module), attr)), name


def test_use_tfds_without_tfds_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # "not installed"
    monkeypatch.delitem(sys.modules, "tinyllm_jax.data.tfds_builders", raising=False)
    (tmp_path / "obqa").mkdir()
    spec = data_spec({"name": "obqa", "data_dir": str(tmp_path), "use_tfds": True,
                      "tfds_data_dir": str(tmp_path / "tfds"), "tokenizer": "byte"})
    with pytest.raises(ValueError, match=r"use_tfds=True: the TFDS builders need TensorFlow "
                       r"Datasets.*pip install 'tinyllm_jax\[tfds\]'"):
        load_examples(spec, "train")


def test_the_package_imports_and_reads_data_without_optional_packages(tmp_path):
    """A fresh process in which the optional packages cannot be imported at all."""
    script = textwrap.dedent(f"""
        import importlib.abc, sys
        BLOCKED = {tuple(n.replace('-', '_') for n in OPTIONAL)!r}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in BLOCKED:
                    raise ImportError(f'blocked {{name}}')
        sys.meta_path.insert(0, Block())
        import tinyllm_jax.export, tinyllm_jax.data.pipeline, tinyllm_jax.student
        from tinyllm_jax.spec import data_spec
        from tinyllm_jax.data.pipeline import load_examples
        examples, _ = load_examples(data_spec({{'teachers': ('algebra',),
                                               'synthetic': {{'train_size': 4}}}}), 'train')
        assert len(examples) == 4
        print('ok', sorted(n for n in BLOCKED if n in sys.modules))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok []"
