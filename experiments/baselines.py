"""Answer-free reference accuracies for the real datasets' test splits.

    python -m experiments.baselines --data_dir=../shared/data/tinyllm

Prints, per dataset: chance (mean 1/#choices); the position prior (always
pick the position that is most often gold in the validation split); and the
shortest choice in T5 tokens. The last is what choice ranking by summed
log-likelihood (the `choice ranking` metric) reduces to for a student that
has learnt token frequencies but not the task: every extra token costs
log-probability, so the shortest choice wins. A ranking accuracy below chance
is then a measure of how often gold is not the shortest choice, not of a
student that learnt something wrong.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable, Sequence

from experiments.grids import DATASETS
from tinyllm_jax.data.tinyllm_files import Question, question_path, read_questions
from tinyllm_jax.data.tokenizer import load_named_tokenizer


def chance(questions: Sequence[Question]) -> float:
    return sum(1 / len(q.choices) for q in questions) / len(questions)


def position_prior(fit: Sequence[Question], score: Sequence[Question]) -> float:
    """Accuracy on `score` of always answering the gold position most common in `fit`."""
    position = Counter(q.choices.index(q.answer) for q in fit).most_common(1)[0][0]
    return sum(q.choices.index(q.answer) == position for q in score) / len(score)


def shortest_choice(questions: Sequence[Question], length: Callable[[str], int]) -> float:
    """Accuracy of picking the choice with the fewest tokens (the first one on a tie)."""
    hits = 0
    for q in questions:
        lengths = [length(c) for c in q.choices]
        hits += q.choices[lengths.index(min(lengths))] == q.answer
    return hits / len(questions)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data_dir", required=True, help="the directory holding obqa/, arc/, ...")
    ap.add_argument("--tokenizer", default="t5")
    args = ap.parse_args()
    tok = load_named_tokenizer(args.tokenizer)
    print("| dataset | test questions | chance (%) | position prior (%) | shortest choice (%) |")
    print("|---|---|---|---|---|")
    for name in DATASETS:
        test = read_questions(question_path(args.data_dir, name, "test"))
        valid = read_questions(question_path(args.data_dir, name, "valid"))
        row = (chance(test), position_prior(valid, test),
               shortest_choice(test, lambda text: len(tok.encode(text))))
        print(f"| {name} | {len(test)} | " + " | ".join(f"{100 * v:.1f}" for v in row) + " |")


if __name__ == "__main__":
    main()
