"""Answer accuracy from decoded answers and ranked choices.

`accuracy` is the reference code's metric (decoded text == gold choice text).
`accuracy_normalized` forgives case, whitespace, trailing punctuation and
answers given as the option letter ("(b)", "b") or as "(b) text".
`accuracy_ranked` (rank classification) is the share of examples whose
highest-likelihood choice is the gold one.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tinyllm_jax.data.example import LETTERS, Example

_SPACE = re.compile(r"\s+")
_LETTER = re.compile(r"^\(?([a-z])\)?(?:\s+(.*))?$")


def normalize(text: str) -> str:
    return _SPACE.sub(" ", text.strip().lower()).strip(string.punctuation + " ")


def is_correct(prediction: str, example: Example) -> tuple[bool, bool]:
    """(exact, normalized) match of a decoded answer with the gold choice."""
    exact = prediction.strip() == example.answer.strip()
    pred, gold = normalize(prediction), normalize(example.answer)
    if exact or pred == gold:
        return exact, True
    m = _LETTER.match(pred)
    if m:
        idx = LETTERS.index(m.group(1))
        if idx < len(example.choices) and example.choices[idx] == example.answer:
            rest = m.group(2)
            return False, rest is None or normalize(rest) == gold
    return False, False


def accuracy_report(
    outputs: Mapping[str, list[int]], examples: Sequence[Example], tokenizer: Any,
    ranked: Mapping[str, int] | None = None,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """(metrics, one prediction row per decoded example) for a split."""
    rows, exact, norm, rank = [], 0, 0, 0
    for ex in examples:
        if ex.id not in outputs:
            continue
        pred = tokenizer.decode(outputs[ex.id])
        e, n = is_correct(pred, ex)
        exact += e
        norm += n
        row = {
            "id": ex.id, "input": ex.input, "gold": ex.answer, "prediction": pred,
            "correct": e, "correct_normalized": n, "label_source": ex.label_source,
        }
        if ranked is not None and ex.id in ranked:
            choice = ex.choices[ranked[ex.id]]
            row.update(ranked_choice=choice, correct_ranked=choice == ex.answer)
            rank += choice == ex.answer
        rows.append(row)
    total = max(len(rows), 1)
    chance = float(np.mean([1.0 / len(ex.choices) for ex in examples])) if examples else 0.0
    report = {
        "accuracy": exact / total, "accuracy_normalized": norm / total,
        "examples": float(len(rows)), "chance": chance,
    }
    if ranked is not None:
        report["accuracy_ranked"] = rank / total
    return report, rows


def accuracy_text(metrics: Mapping[str, float]) -> str:
    """The accuracies of `accuracy_report` as one line for the console."""
    text = f"accuracy {metrics['accuracy']:.4f} (exact match of the generated answer"
    text += f"; normalized {metrics['accuracy_normalized']:.4f}"
    if "accuracy_ranked" in metrics:
        text += f"; choice ranking {metrics['accuracy_ranked']:.4f}"
    return text + f"), chance {metrics['chance']:.4f}"
