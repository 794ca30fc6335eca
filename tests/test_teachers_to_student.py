"""Teacher generation feeds the student: tiny HF teachers write the rationale
store for the synthetic task, and the trainer reads it and trains on it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_generated_rationales_train_the_student(tmp_path):
    models, store = tmp_path / "models", tmp_path / "rationales"
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", *a], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    r = run("tinyllm_jax.teachers.tiny", f"--out={models}")
    assert r.returncode == 0, r.stderr[-2000:]
    r = run("tinyllm_jax.teachers", f"--config=configs/teachers/demo.py:models={models},n=12",
            f"--config.out_dir={store}")
    assert r.returncode == 0, r.stderr[-2000:]
    for teacher in ("tiny_llama", "tiny_t5"):
        lines = (store / "synthetic" / teacher / "train.jsonl").read_text().splitlines()
        assert len(lines) == 12 and all(json.loads(x)["id"] for x in lines)

    from tinyllm_jax.configs import load_config_file
    from tinyllm_jax.train import train_and_evaluate

    cfg = load_config_file(REPO / "configs" / "tiny.py", "steps=2,teachers=tiny_llama+tiny_t5")
    cfg.data.rationale_store = str(store)
    # The same synthetic split the teachers saw, so ids join.
    cfg.data.synthetic.train_size, cfg.data.synthetic.valid_size = 400, 50
    cfg.data.synthetic.test_size = 50
    cfg.train.eval_every = 0
    cfg.train.final_eval_split = ""
    summary = train_and_evaluate(cfg, str(tmp_path / "student"))
    assert summary["status"] == "completed" and summary["teachers"] == ["tiny_llama", "tiny_t5"]
    rows = [json.loads(x) for x in (tmp_path / "student" / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if r["kind"] == "train"][-1]
    # Rationale tasks had real tokens (rationales from the store), so their loss is logged > 0.
    assert last["loss/tiny_llama"] > 0 and last["loss/tiny_t5"] > 0
