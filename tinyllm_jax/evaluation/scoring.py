"""Answer accuracy from decoded answers and ranked choices.

`accuracy` is the reference code's metric: the decoded prediction equals the
*decoded* gold, i.e. the gold answer tokenised and detokenised with the same
tokenizer (google-research/distilling-step-by-step metrics.py and TinyLLM
tiny.py, `compute_metrics_text`: both sides go through `batch_decode`). A gold
the vocabulary cannot spell (T5 folds runs of spaces and has no `{`, `}`) is
then compared in the form the student could produce. Both sides are stripped
of surrounding whitespace, which carries no answer. One difference stays: the
reference's HF `batch_decode` (transformers 4.36.2, pinned by TinyLLM's
requirements.txt) also applies `clean_up_tokenization_spaces` by default to
both sides (" ." -> ".", " 's" -> "'s", ...), which can make two different
decodings equal; this decode does not.
`accuracy_strict` compares with the raw gold text instead (this project's
`accuracy` before the change; such golds can never be matched).
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


def decoded_gold(answer: str, tokenizer: Any) -> str:
    """`answer` as the tokenizer gives it back after a round trip, stripped."""
    return tokenizer.decode(tokenizer.encode(answer)).strip()


def survives_round_trip(answer: str, tokenizer: Any) -> bool:
    """Whether the tokenizer gives `answer` back unchanged (up to surrounding
    whitespace): only then do `accuracy` and `accuracy_strict` agree on it."""
    return decoded_gold(answer, tokenizer) == answer.strip()


def is_correct(prediction: str, example: Example, gold_decoded: str | None = None
               ) -> tuple[bool, bool, bool]:
    """(reference, strict, normalized) match of a decoded answer with the gold
    choice; `gold_decoded` is the gold after the tokenizer round trip (the raw
    gold when None, for a tokenizer that round-trips it)."""
    pred = prediction.strip()
    strict = pred == example.answer.strip()
    golds = {example.answer.strip()} if gold_decoded is None else {example.answer.strip(),
                                                                  gold_decoded}
    reference = pred == (example.answer.strip() if gold_decoded is None else gold_decoded)
    if reference or strict:
        return reference, strict, True
    npred = normalize(prediction)
    if npred in {normalize(g) for g in golds}:
        return False, False, True
    m = _LETTER.match(npred)
    if m:
        idx = LETTERS.index(m.group(1))
        if idx < len(example.choices) and example.choices[idx] == example.answer:
            rest = m.group(2)
            return False, False, rest is None or normalize(rest) in {normalize(g) for g in golds}
    return False, False, False


def accuracy_report(
    outputs: Mapping[str, list[int]], examples: Sequence[Example], tokenizer: Any,
    ranked: Mapping[str, int] | None = None,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """(metrics, one prediction row per decoded example) for a split.

    A row holds `gold_decoded` only where the round trip changes the gold."""
    rows, ref, strict, norm, rank = [], 0, 0, 0, 0
    for ex in examples:
        if ex.id not in outputs:
            continue
        pred = tokenizer.decode(outputs[ex.id])
        gold = decoded_gold(ex.answer, tokenizer)
        r, s, n = is_correct(pred, ex, gold)
        ref += r
        strict += s
        norm += n
        row = {
            "id": ex.id, "input": ex.input, "gold": ex.answer, "prediction": pred,
            "correct": r, "correct_strict": s, "correct_normalized": n,
            "label_source": ex.label_source,
        }
        if gold != ex.answer.strip():
            row["gold_decoded"] = gold
        if ranked is not None and ex.id in ranked:
            choice = ex.choices[ranked[ex.id]]
            row.update(ranked_choice=choice, correct_ranked=choice == ex.answer)
            rank += choice == ex.answer
        rows.append(row)
    total = max(len(rows), 1)
    chance = float(np.mean([1.0 / len(ex.choices) for ex in examples])) if examples else 0.0
    report = {
        "accuracy": ref / total, "accuracy_strict": strict / total,
        "accuracy_normalized": norm / total, "examples": float(len(rows)), "chance": chance,
    }
    if ranked is not None:
        report["accuracy_ranked"] = rank / total
    return report, rows


def accuracy_text(metrics: Mapping[str, float]) -> str:
    """The accuracies of `accuracy_report` as one line for the console."""
    text = f"accuracy {metrics['accuracy']:.4f} (generated answer == decoded gold"
    if "accuracy_strict" in metrics:
        text += f"; raw gold {metrics['accuracy_strict']:.4f}"
    text += f"; normalized {metrics['accuracy_normalized']:.4f}"
    if "accuracy_ranked" in metrics:
        text += f"; choice ranking {metrics['accuracy_ranked']:.4f}"
    return text + f"), chance {metrics['chance']:.4f}"
