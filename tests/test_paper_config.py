"""configs/experiments/paper.py: the reference recipe, and a short run from a local HF T5."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from tests.conftest import T5_VOCAB
from tinyllm_jax.configs import load_config_file
from tinyllm_jax.spec import parse

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "experiments" / "paper.py"


def _spec(arg: str, data_dir: str = "/data"):
    cfg = load_config_file(CONFIG, arg)
    cfg.data.data_dir = data_dir
    return parse(cfg)


def test_the_reference_hyperparameters():
    s = _spec("dataset=arc,size=base")
    assert s.init_from == "google/flan-t5-base"
    assert (s.optimizer.lr, s.optimizer.schedule, s.optimizer.warmup_steps) == (5e-5, "linear", 0)
    assert s.optimizer.end_lr_fraction == 0.0 and s.optimizer.accumulate_steps == 8
    # 8 examples x 8 accumulation steps, each example with its answer and two rationales
    assert s.train.batch_size == 8 * 8 * 3 and not s.data.packing
    assert (s.train.steps, s.train.eval_every) == (10_000, 250)
    assert (s.data.max_input_len, s.data.max_target_len) == (100, 256)
    assert s.data.teachers == ("flan", "llama") and s.eval.best_metric == "accuracy"
    piqa = _spec("dataset=piqa,init=/ckpt/flan-small,max_input=512")
    assert piqa.data.teachers == ("flan",) and piqa.train.batch_size == 8 * 8 * 2
    assert piqa.init_from == "/ckpt/flan-small" and piqa.data.max_input_len == 512
    assert s.data.teacher_prefixes == ("explain: ", "rationale: ")
    assert _spec("dataset=obqa,teachers=llama").data.teacher_prefixes == ("rationale: ",)
    assert _spec("dataset=obqa,teachers=none").train.batch_size == 64
    with pytest.raises(ValueError, match="a FLAN-T5 student"):
        load_config_file(CONFIG, "size=tiny")


def _tiny_flan_t5(directory: Path) -> Path:
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.T5Config(
        vocab_size=32128, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1,
        num_heads=2, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    transformers.T5ForConditionalGeneration(cfg).save_pretrained(directory)
    return directory


def _obqa(root: Path) -> Path:
    """A few OBQA-layout questions with FLAN-T5 and LLaMA-2 teacher strings."""
    d = root / "obqa"
    (d / "llm").mkdir(parents=True)
    for split, n in (("train", 8), ("valid", 3), ("test", 3)):
        qs = [{"id": f"{split}-{i}", "question": f"Which thing number {i} grows?",
               "choices": ["a plant", "a rock", "a spoon", "a cloud"], "answer": "a plant"}
              for i in range(n)]
        (d / f"obqa_{split}.json").write_text("\n".join(json.dumps(q) for q in qs) + "\n")
        rows = [f"Plants grow. Thus, the answer is (a) a plant\n\nQ: {q['question']}\n"
                "Answer Choices:\n(a) a plant\n(b) a rock\n(c) a spoon\n(d) a cloud "
                "llama rationale: Living things grow. Therefore, (a)." for q in qs]
        (d / "llm" / f"{split}_CoT_0.json").write_text(json.dumps(rows))
    return root


@pytest.mark.slow  # about 90 s on 2 shared cores
@pytest.mark.skipif(not (T5_VOCAB / "tokenizer.json").is_file(), reason=f"{T5_VOCAB} not present")
def test_a_short_run_from_a_local_hf_t5_directory(tmp_path):
    pytest.importorskip("transformers")
    from tinyllm_jax.train import train_and_evaluate

    init = _tiny_flan_t5(tmp_path / "flan-t5-random")
    cfg = load_config_file(CONFIG, f"dataset=obqa,init={init}")
    cfg.data.data_dir = str(_obqa(tmp_path / "data"))
    cfg.data.tokenizer = str(T5_VOCAB)
    # A few steps of the recipe on 8 questions: 24 rows (8 examples x 3 tasks)
    # per update, in the recipe's 8 micro-batches of 3 rows.
    cfg.train.steps, cfg.train.batch_size = 4, 24
    cfg.train.log_every, cfg.train.eval_every, cfg.train.checkpoint_every = 1, 2, 2
    cfg.train.eval_max_new_tokens, cfg.train.plot, cfg.train.progress_bar = 4, False, False
    summary = train_and_evaluate(cfg, str(tmp_path / "run"))
    assert summary["status"] == "completed" and summary["teachers"] == ["flan", "llama"]
    # The student's shape is the checkpoint's, not the "small" preset's.
    assert summary["model"]["d_model"] == 16 and summary["model"]["num_layers"] == 1
    assert summary["test_examples"] == 3 and "test_accuracy_strict" in summary
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows if r["kind"] == "train"]
    # Linear decay to 0 over the run, from 5e-5, with no warm-up.
    assert len(lrs) == 4 and lrs[0] <= 5e-5 and all(a > b for a, b in itertools.pairwise(lrs))
    assert all(a - b == pytest.approx(5e-5 / 4, rel=1e-3) for a, b in itertools.pairwise(lrs))
    assert [r["step"] for r in rows if r["kind"] == "eval/valid"] == [2, 4]
