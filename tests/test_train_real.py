"""A short real run on ../shared/data/tinyllm/obqa with both teachers (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import T5_VOCAB, TINYLLM_DATA, require_shared

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.shared_data
def test_obqa_tiny_student_runs_end_to_end(tmp_path):
    require_shared(TINYLLM_DATA / "obqa")
    require_shared(T5_VOCAB)
    from tinyllm_jax.configs import load_config_file
    from tinyllm_jax.train import train_and_evaluate

    cfg = load_config_file(REPO / "configs" / "obqa.py", "size=tiny,teachers=flan+llama")
    cfg.data.data_dir = str(TINYLLM_DATA)
    cfg.data.tokenizer = str(T5_VOCAB)
    cfg.data.max_input_len, cfg.data.max_target_len = 256, 128
    cfg.train.steps, cfg.train.batch_size = 6, 8
    cfg.train.log_every, cfg.train.eval_every, cfg.train.checkpoint_every = 3, 6, 3
    cfg.train.eval_max_new_tokens = 12
    cfg.train.eval_batch_size = 100
    cfg.optimizer.lr = 1e-3
    summary = train_and_evaluate(cfg, str(tmp_path))
    assert summary["status"] == "completed" and summary["teachers"] == ["flan", "llama"]
    assert summary["test_examples"] == 500
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert {"loss/answer", "loss/flan", "loss/llama"} <= set(train_rows[-1])
    assert (tmp_path / "checkpoints" / "6").is_dir()
    assert len((tmp_path / "predictions_test.jsonl").read_text().splitlines()) == 500
