"""The answer-free reference accuracies of experiments/baselines.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from experiments.baselines import chance, position_prior, shortest_choice
from tinyllm_jax.data.tinyllm_files import Question

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyllm"


def _q(choices: tuple[str, ...], answer: str) -> Question:
    return Question(id="x", question="?", choices=choices, answer=answer, row=0)


def test_baselines_on_hand_counted_questions() -> None:
    qs = [_q(("a b", "c", "d e f"), "c"),            # gold shortest, position 1
          _q(("a", "b c", "d e", "f g h"), "b c"),   # gold not shortest, position 1
          _q(("a b", "c d"), "a b")]                 # tie: the first one, position 0
    assert chance(qs) == pytest.approx((1 / 3 + 1 / 4 + 1 / 2) / 3)
    assert shortest_choice(qs, lambda t: len(t.split())) == pytest.approx(2 / 3)
    # position 1 is gold most often in `fit`; it is gold in 2 of the 3 scored.
    assert position_prior(qs[:2], qs) == pytest.approx(2 / 3)
    assert position_prior(qs[2:], qs) == pytest.approx(1 / 3)


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/tinyllm is not on this machine")
def test_baselines_cli_on_the_real_test_splits() -> None:
    out = subprocess.run([sys.executable, "-m", "experiments.baselines", f"--data_dir={SHARED}"],
                         capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    rows = {line.split(" | ")[0].strip("| "): line for line in out.splitlines()[2:]}
    assert sorted(rows) == ["arc", "obqa", "piqa", "pubmedqa", "riddle"]
    assert "| 500 | 25.0 |" in rows["obqa"] and "| 919 | 50.0 |" in rows["piqa"]
