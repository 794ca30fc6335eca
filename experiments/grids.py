"""The experiment grids of docs/results.md, as (run name, config arg) lists."""

from __future__ import annotations

SEEDS = (0, 1, 2)
SYNTHETIC = "configs/experiments/synthetic.py"
REAL = "configs/experiments/real.py"

# experiments/report.py reads these too, to group and order the finished runs.
SYNTHETIC_METHODS = ("answer", "algebra", "verbal", "both", "both_filtered")
EFFICIENCY_METHODS = ("answer", "both")
DATASETS = ("obqa", "arc", "riddle", "piqa", "pubmedqa")
REAL_METHODS = ("answer", "flan", "llama", "both")


# Steps (iv) takes for its 3 epochs (105 batches per epoch at every seed):
# the equal-compute control trains answer-only for as many steps.
EQUAL_COMPUTE_STEPS = 315


def synthetic_methods() -> list[tuple[str, str, str]]:
    runs = []
    for s in SEEDS:  # seed-major, so a partial grid already covers every method
        runs += [(f"synthetic-{m}-s{s}", SYNTHETIC, f"method={m},seed={s}")
                 for m in SYNTHETIC_METHODS]
        runs.append((f"synthetic-answer-steps{EQUAL_COMPUTE_STEPS}-s{s}", SYNTHETIC,
                     f"method=answer,steps={EQUAL_COMPUTE_STEPS},seed={s}"))
    return runs


def synthetic_efficiency() -> list[tuple[str, str, str]]:
    # 3/f epochs over a fraction f: the same steps as the full-data run, on less data.
    return [
        (f"synthetic-{m}-f{f}-s{s}", SYNTHETIC, f"method={m},fraction={f},epochs={3 / f:g},seed={s}")
        for s in SEEDS
        for m in EFFICIENCY_METHODS
        for f in (0.125, 0.25, 0.5)  # 1.0 is in synthetic_methods
    ]


def synthetic_alpha() -> list[tuple[str, str, str]]:
    return [
        (f"synthetic-both-a{a}-s{s}", SYNTHETIC, f"method=both,alpha={a},seed={s}")
        for s in SEEDS
        for a in (0.1, 0.5, 2.0)  # 1.0 is in synthetic_methods
    ]


# Rationale-then-answer against multi-task (docs/results.md): the "tiny" student
# on 600 training problems, rows fixed at 256+128 tokens and a 300-problem test
# split (run_grid --override, see the doc), so that equal steps are equal
# compute; sized for a loaded 2-core machine. 3 epochs take 66 steps multi-task
# (22 rows per epoch at every seed) and 78-79 rationale-then-answer (26-27);
# each mode is also trained for the other's step count (equal compute).
RTA_TRAIN_SIZE = 600
RTA_RUNS = (("multitask", "3ep", "epochs=3"), ("rta", "3ep", "epochs=3"),
            ("rta", "steps66", "steps=66"), ("multitask", "steps78", "steps=78"))


def synthetic_rationale_then_answer() -> list[tuple[str, str, str]]:
    modes = {"multitask": "multitask", "rta": "rationale_then_answer"}
    return [
        (f"synthetic-{m}-{tag}-s{s}", SYNTHETIC,
         f"method=both,mode={modes[m]},size=tiny,train_size={RTA_TRAIN_SIZE},{budget},seed={s}")
        for s in SEEDS
        for m, tag, budget in RTA_RUNS
    ]


def real() -> list[tuple[str, str, str]]:
    return [
        (f"{d}-{m}-s{s}", REAL, f"dataset={d},method={m},seed={s}")
        for s in SEEDS
        for d in DATASETS
        # PIQA has FLAN-T5 rationales only.
        for m in (("answer", "flan") if d == "piqa" else REAL_METHODS)
    ]


GRIDS = {
    "synthetic_methods": synthetic_methods,
    "synthetic_efficiency": synthetic_efficiency,
    "synthetic_alpha": synthetic_alpha,
    "real": real,
    "synthetic_rationale_then_answer": synthetic_rationale_then_answer,
}
