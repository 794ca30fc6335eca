"""configs/teachers/<dataset>.py: the paper's two teachers on every dataset, by --dry_run.

The hub models cannot be downloaded here, so the configs' `flan=` and `llama=`
arguments point at tiny local teachers of the same kinds (a seq2seq T5 and a
causal Llama with a chat template); a dry run loads tokenizers, builds every
prompt and loads no model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from tests.conftest import T5_VOCAB, TINYLLM_DATA
from tinyllm_jax.configs import load_config_file
from tinyllm_jax.teachers.config import run_spec
from tinyllm_jax.teachers.runner import run

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = ("obqa", "arc", "riddle", "piqa", "pubmedqa")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    from tinyllm_jax.teachers.tiny import make_tiny_teachers, train_tokenizer

    texts = ["Question: Options: Answer: Rationale: Let's think step by step. yes no"] * 4
    tok = train_tokenizer(texts, 120)
    tok.chat_template = ("{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }}\n"
                         "{% endfor %}{% if add_generation_prompt %}<assistant> {% endif %}")
    paths = make_tiny_teachers(tmp_path_factory.mktemp("teachers"), tok, width=8)
    return {k: str(v) for k, v in paths.items()}


def _bioasq(root: Path) -> Path:
    """The authors' BioASQ layout (configs/bioasq.py) with made-up questions."""
    d = root / "bioasq"
    (d / "llm").mkdir(parents=True)
    for split, n in (("train", 3), ("valid", 2), ("test", 1)):
        qs = [{"id": f"{split}{i}", "question": f"Snippet {i} about p85. Is p85 a subunit {i}?",
               "choices": ["yes", "no"], "answer": "yes" if i % 2 == 0 else "no"}
              for i in range(n)]
        (d / f"bioasq_{split}.json").write_text(json.dumps(qs, indent=4))
        rows = [f"It is stated in snippet {i}. Thus, the answer is ({'a' if q['answer'] == 'yes' else 'b'}) "
                f"{q['answer']}\n\nQ: {q['question']}\nAnswer Choices:\n(a) yes\n(b) no "
                f"llama rationale: Let's think step by step. Therefore, {q['answer']}."
                for i, q in enumerate(qs)]
        (d / "llm" / f"{split}_CoT_0.json").write_text(json.dumps(rows))
    return root


def _arg(models: dict[str, str], data_dir: Path) -> str:
    return f"data_dir={data_dir},device=cpu,flan={models['tiny_t5']},llama={models['tiny_llama']}"


def _dry_run(dataset: str, arg: str) -> list[str]:
    cfg = load_config_file(f"configs/teachers/{dataset}.py", arg)
    spec = run_spec(cfg)
    assert [t.name for t in spec.teachers] == ["flan_t5_xl", "llama2_7b_chat"]
    lines: list[str] = []
    run(spec, cfg.data, dry_run=1, echo=lines.append)
    return lines


def _check(lines: list[str], dataset: str) -> None:
    heads = [x for x in lines if x.startswith("===== teacher")]
    # one prompt per teacher and split
    assert len(heads) == 6, heads
    assert sum("flan_t5_xl" in h and "plain template" in h for h in heads) == 3
    assert sum("llama2_7b_chat" in h and "chat template" in h for h in heads) == 3
    prompts = [x for x in lines if not x.startswith("=====")]
    # teacher-forced: the gold answer is in the prompt; two demos with rationales
    assert all("Answer:\n(" in p and p.endswith("Let's think step by step.") for p in prompts)
    assert all(h.count("'") >= 4 for h in heads), "two demo ids per prompt"


def test_the_hub_defaults_are_the_papers_teachers():
    for dataset in (*PUBLISHED, "bioasq"):
        cfg = load_config_file(f"configs/teachers/{dataset}.py")
        assert cfg.data.name == dataset
        assert cfg.teachers.flan_t5_xl.model == "google/flan-t5-xl"
        assert cfg.teachers.llama2_7b_chat.model == "meta-llama/Llama-2-7b-chat-hf"
        long_inputs = dataset in ("pubmedqa", "bioasq")
        assert (cfg.teachers.llama2_7b_chat.max_prompt_tokens > 0) == long_inputs
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        load_config_file("configs/teachers/arc.py", "datadir=x")


def test_bioasq_dry_run_on_the_published_layout(models, tmp_path):
    _check(_dry_run("bioasq", _arg(models, _bioasq(tmp_path))), "bioasq")


@pytest.mark.slow
def test_bioasq_dry_run_command_line(models, tmp_path):
    root = _bioasq(tmp_path)
    out = tmp_path / "store"
    cmd = [sys.executable, "-m", "tinyllm_jax.teachers",
           f"--config=configs/teachers/bioasq.py:{_arg(models, root)}", "--dry_run=1",
           "--splits=valid", f"--config.out_dir={out}"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("===== teacher") == 2
    assert "Is p85 a subunit 0?" in done.stdout
    assert not out.exists()


@pytest.mark.skipif(not TINYLLM_DATA.is_dir() or not T5_VOCAB.is_dir(),
                    reason=f"{TINYLLM_DATA} not present")
# ARC in the default suite; the others read more files (PIQA's 33 chunks) and run with -m slow.
@pytest.mark.parametrize("dataset", [d if d == "arc" else pytest.param(d, marks=pytest.mark.slow)
                                     for d in PUBLISHED])
def test_dry_run_on_the_published_files(dataset, models):
    _check(_dry_run(dataset, _arg(models, TINYLLM_DATA)), dataset)
