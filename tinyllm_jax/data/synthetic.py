"""Offline multi-step arithmetic word problems with programmatic teachers.

The generator is the project's embedded default task: it needs no download,
is fully determined by its seed, and has the property that makes rationale
distillation measurable, namely that the answer needs intermediate steps.

Problems
    "Ann has 7 apples. She buys 3 packs of 4. She gives 5 to Bob. How many
    apples does Ann have now?" A start value followed by `min_events` to
    `max_events` events, each one sentence: find n more, lose n, give n to a
    friend, buy b packs of c, give b friends c each, double. Numbers stay
    small (every intermediate value is 0..99) so inputs are ~110-200 bytes.

Choices
    Four numbers: the gold answer and three distractors that are the results
    of plausible mistakes: skipping one event, using the wrong operation in one
    event (b + c for "b packs of c", adding instead of subtracting, adding 2
    instead of doubling), and, only to fill up, an off-by-one/two slip in one
    event. Every mistake is carried through the later events, so a distractor
    is what a solver who went wrong at that step would reach. Guessing from
    the choices alone is possible but weak (e.g. "skip a give" distractors sit
    above the gold answer); computing the steps is what solves the task.

Teachers
    Each teacher narrates the computation in its own style and ends with
    "... the answer is N.":

    - ``algebra``: "3 * 4 = 12. 7 + 12 = 19. 19 - 5 = 14. The answer is 14."
    - ``verbal``:  "Ann starts with 7. Three packs of four is 12, so she has
      19. After giving 5 away she has 14. So the answer is 14."
    - ``steps``:   "Step 1: start with 7. Step 2: add 3 packs of 4 = 12, total
      19. Step 3: subtract 5, total 14. Answer: 14."

    With probability ``error_rates[teacher]`` a teacher makes one of the
    mistakes that produced a distractor: it narrates the mistaken trace (a
    skipped event is left out, a wrong operation shows up as a wrong result)
    and states the matching wrong answer, recorded in ``teacher_answers``.
    With probability ``missing_rates[teacher]`` it gives no rationale (None),
    which exercises the loss-masking path. Teacher randomness is seeded per
    (seed, teacher, example id), so adding a teacher or changing a rate never
    changes another teacher's output, and a higher error rate makes a
    superset of the mistakes of a lower one.

Splits
    One random stream per seed generates test, then valid, then train, with
    question texts unique across all three; the test split depends only on
    the seed and its size, so changing the train size keeps evaluation fixed.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tinyllm_jax.data.example import Example
from tinyllm_jax.data.report import DataReport

SPLITS = ("test", "valid", "train")  # generation order, see the docstring
SPLIT_ALIASES = {"validation": "valid", "dev": "valid", "eval": "valid"}

_PEOPLE = (
    ("Ann", "she", "her"),
    ("Bob", "he", "his"),
    ("Cat", "she", "her"),
    ("Dan", "he", "his"),
    ("Eve", "she", "her"),
    ("Finn", "he", "his"),
    ("Gia", "she", "her"),
    ("Hal", "he", "his"),
    ("Ivy", "she", "her"),
    ("Jon", "he", "his"),
    ("Kim", "she", "her"),
    ("Leo", "he", "his"),
)
_FRIENDS = ("Max", "Nia", "Omar", "Pia", "Raj", "Sue", "Tom", "Uma", "Vic", "Zoe")
_ITEMS = (
    "apples",
    "pens",
    "stickers",
    "marbles",
    "cards",
    "coins",
    "shells",
    "books",
    "eggs",
    "stamps",
    "beads",
    "cookies",
)
_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_MAX_VALUE = 99  # intermediate values stay two-digit to keep inputs short


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Sizes, seed, problem length and per-teacher error/missing rates."""

    train_size: int = 4000
    valid_size: int = 500
    test_size: int = 500
    seed: int = 0
    min_events: int = 2
    max_events: int = 3
    error_rates: Mapping[str, float] = dataclasses.field(
        default_factory=lambda: {"algebra": 0.1, "verbal": 0.2, "steps": 0.15}
    )
    missing_rates: Mapping[str, float] = dataclasses.field(
        default_factory=lambda: {"algebra": 0.0, "verbal": 0.02, "steps": 0.0}
    )

    def size(self, split: str) -> int:
        return {"train": self.train_size, "valid": self.valid_size, "test": self.test_size}[split]


@dataclasses.dataclass(frozen=True)
class _Event:
    kind: str  # find | lose | give | buy | give_each | double
    n: int = 0  # amount for find/lose/give
    b: int = 0  # group count for buy/give_each
    c: int = 0  # group size for buy/give_each
    friend: str = ""


@dataclasses.dataclass(frozen=True)
class _Step:
    """One event as some solver computed it: `part` is the b*c sub-result."""

    event: _Event
    before: int
    part: int | None
    after: int


@dataclasses.dataclass(frozen=True)
class _Problem:
    name: str
    pronoun: str
    possessive: str
    item: str
    start: int
    events: tuple[_Event, ...]

    def question(self) -> str:
        p = self.pronoun.capitalize()
        sentences = [f"{self.name} has {self.start} {self.item}."]
        for e in self.events:
            sentences.append(
                {
                    "find": f"{p} finds {e.n} more.",
                    "lose": f"{p} loses {e.n}.",
                    "give": f"{p} gives {e.n} to {e.friend}.",
                    "buy": f"{p} buys {e.b} packs of {e.c}.",
                    "give_each": f"{p} gives {e.b} friends {e.c} each.",
                    "double": f"{p} doubles {self.possessive} {self.item}.",
                }[e.kind]
            )
        sentences.append(f"How many {self.item} does {self.name} have now?")
        return " ".join(sentences)


# ---------------------------------------------------------------- arithmetic


def _apply(e: _Event, v: int, mistake: str | None = None) -> tuple[int | None, int]:
    """(sub-result, new value) of event `e` on value `v`, possibly mistaken."""
    if e.kind in ("buy", "give_each"):
        part = e.b + e.c if mistake == "wrong_op" else e.b * e.c
        after = v + part if e.kind == "buy" else v - part
    elif e.kind == "find":
        part, after = None, (v - e.n if mistake == "wrong_op" else v + e.n)
    elif e.kind in ("lose", "give"):
        part, after = None, (v + e.n if mistake == "wrong_op" else v - e.n)
    elif e.kind == "double":
        part, after = None, (v + 2 if mistake == "wrong_op" else v * 2)
    else:  # pragma: no cover - kinds are generated internally
        raise AssertionError(e.kind)
    return part, after


def _trace(problem: _Problem, mistake: tuple[int, str, int] | None = None) -> list[_Step]:
    """Steps as computed, with at most one mistake (event index, kind, slip)."""
    steps, v = [], problem.start
    for i, e in enumerate(problem.events):
        kind = mistake[1] if mistake and mistake[0] == i else None
        if kind == "skip":
            continue
        part, after = _apply(e, v, "wrong_op" if kind == "wrong_op" else None)
        if kind == "slip":
            after += mistake[2]
        steps.append(_Step(e, v, part, after))
        v = after
    return steps


def _final(problem: _Problem, mistake: tuple[int, str, int] | None = None) -> int:
    steps = _trace(problem, mistake)
    return steps[-1].after if steps else problem.start


def _random_event(rng: random.Random, v: int, allow_double: bool) -> _Event:
    kinds = ["find", "buy", "give", "lose", "give_each"]
    if allow_double and v <= 12:
        kinds.append("double")
    while True:
        kind = rng.choice(kinds)
        friend = rng.choice(_FRIENDS)
        if kind == "find":
            return _Event(kind, n=rng.randint(2, 9))
        if kind == "buy":
            return _Event(kind, b=rng.randint(2, 5), c=rng.randint(2, 6))
        if kind in ("give", "lose") and v >= 3:
            return _Event(kind, n=rng.randint(2, min(9, v - 1)), friend=friend)
        if kind == "give_each":
            b, c = rng.randint(2, 4), rng.randint(2, 5)
            if b * c < v:
                return _Event(kind, b=b, c=c)
        if kind == "double":
            return _Event(kind)


def _random_problem(rng: random.Random, min_events: int, max_events: int) -> _Problem:
    while True:
        name, pronoun, possessive = rng.choice(_PEOPLE)
        item = rng.choice(_ITEMS)
        start = rng.randint(3, 15)
        events, v = [], start
        for i in range(rng.randint(min_events, max_events)):
            e = _random_event(rng, v, allow_double=i > 0)
            events.append(e)
            v = _apply(e, v)[1]
        # Each problem needs at least one multiplication-like step so that
        # partial computations give distinct, tempting distractors.
        has_product = any(e.kind in ("buy", "give_each", "double") for e in events)
        if has_product and 0 < v <= _MAX_VALUE:
            return _Problem(name, pronoun, possessive, item, start, tuple(events))


def _mistakes(problem: _Problem, rng: random.Random) -> list[tuple[tuple[int, str, int], int]]:
    """Plausible mistakes with their final values, tempting ones first."""
    gold = _final(problem)
    primary, fillers = [], []
    for i in range(len(problem.events)):
        primary.append((i, "skip", 0))
        primary.append((i, "wrong_op", 0))
        fillers.append((i, "slip", rng.choice((-2, -1, 1, 2))))
    rng.shuffle(primary)
    rng.shuffle(fillers)
    out, seen = [], {gold}
    for m in primary + fillers:
        value = _final(problem, m)
        if value not in seen and 0 <= value <= _MAX_VALUE + 20:
            seen.add(value)
            out.append((m, value))
    return out


# ---------------------------------------------------------------- teachers


def _word(n: int) -> str:
    return _WORDS[n] if 0 <= n < len(_WORDS) else str(n)


def _algebra(problem: _Problem, steps: Sequence[_Step]) -> str:
    out = []
    for s in steps:
        e = s.event
        if e.kind in ("buy", "give_each"):
            sign = "+" if e.kind == "buy" else "-"
            out.append(f"{e.b} * {e.c} = {s.part}. {s.before} {sign} {s.part} = {s.after}.")
        elif e.kind == "find":
            out.append(f"{s.before} + {e.n} = {s.after}.")
        elif e.kind in ("lose", "give"):
            out.append(f"{s.before} - {e.n} = {s.after}.")
        else:
            out.append(f"{s.before} * 2 = {s.after}.")
    final = steps[-1].after if steps else problem.start
    return " ".join([*out, f"The answer is {final}."])


def _verbal(problem: _Problem, steps: Sequence[_Step]) -> str:
    p = problem.pronoun
    out = [f"{problem.name} starts with {problem.start}."]
    for s in steps:
        e = s.event
        groups = _word(e.b).capitalize()
        if e.kind == "buy":
            out.append(f"{groups} packs of {_word(e.c)} is {s.part}, so {p} has {s.after}.")
        elif e.kind == "give_each":
            out.append(
                f"{groups} friends get {_word(e.c)} each, that is {s.part}, so {s.after} are left."
            )
        elif e.kind == "find":
            out.append(f"Finding {e.n} more makes {s.after}.")
        elif e.kind == "lose":
            out.append(f"Losing {e.n} leaves {s.after}.")
        elif e.kind == "give":
            out.append(f"After giving {e.n} away {p} has {s.after}.")
        else:
            out.append(f"Doubling {s.before} gives {s.after}.")
    final = steps[-1].after if steps else problem.start
    return " ".join([*out, f"So the answer is {final}."])


def _stepwise(problem: _Problem, steps: Sequence[_Step]) -> str:
    out = [f"Step 1: start with {problem.start}."]
    for k, s in enumerate(steps, start=2):
        e = s.event
        if e.kind == "buy":
            what = f"add {e.b} packs of {e.c} = {s.part}"
        elif e.kind == "give_each":
            what = f"subtract {e.b} times {e.c} = {s.part}"
        elif e.kind == "find":
            what = f"add {e.n}"
        elif e.kind in ("lose", "give"):
            what = f"subtract {e.n}"
        else:
            what = "double"
        out.append(f"Step {k}: {what}, total {s.after}.")
    final = steps[-1].after if steps else problem.start
    return " ".join([*out, f"Answer: {final}."])


TEACHERS: dict[str, Callable[[_Problem, Sequence[_Step]], str]] = {
    "algebra": _algebra,
    "verbal": _verbal,
    "steps": _stepwise,
}


# ---------------------------------------------------------------- examples


def _choices(problem: _Problem, rng: random.Random):
    gold = _final(problem)
    mistakes = _mistakes(problem, rng)[:3]
    values = [v for _, v in mistakes]
    # Rare problems have fewer than 3 distinct mistakes; pad with near misses.
    for delta in rng.sample((-3, -1, 1, 2, 3, 10), 6):
        if len(values) == 3:
            break
        v = gold + delta
        if v >= 0 and v != gold and v not in values:
            values.append(v)
    options = [gold, *values]
    rng.shuffle(options)
    return tuple(str(v) for v in options), str(gold), mistakes


def _teacher_output(
    teacher: str, problem: _Problem, mistakes, example_id: str, cfg: SyntheticConfig
) -> tuple[str | None, str | None, bool]:
    """(rationale, stated answer, erred) for one teacher on one problem."""
    rng = random.Random(f"tinyllm-synthetic/{cfg.seed}/{teacher}/{example_id}")
    u_missing, u_error = rng.random(), rng.random()
    if u_missing < float(cfg.missing_rates.get(teacher, 0.0)):
        return None, None, False
    mistake = None
    if mistakes and u_error < float(cfg.error_rates.get(teacher, 0.0)):
        mistake = rng.choice(mistakes)[0]
    steps = _trace(problem, mistake)
    final = steps[-1].after if steps else problem.start
    return TEACHERS[teacher](problem, steps), str(final), mistake is not None


def _check_config(cfg: SyntheticConfig, teachers: Sequence[str]) -> None:
    unknown = [t for t in teachers if t not in TEACHERS]
    if unknown:
        raise ValueError(
            f"synthetic data: unknown teacher(s) {unknown}; expected names from {sorted(TEACHERS)}"
        )
    if not 1 <= cfg.min_events <= cfg.max_events <= 6:
        raise ValueError(
            f"synthetic data: need 1 <= min_events <= max_events <= 6, got "
            f"{cfg.min_events}..{cfg.max_events}"
        )
    for field in ("train_size", "valid_size", "test_size"):
        if int(getattr(cfg, field)) < 0:
            raise ValueError(f"synthetic data: {field} must be >= 0, got {getattr(cfg, field)}")
    for name, rates in (("error_rates", cfg.error_rates), ("missing_rates", cfg.missing_rates)):
        for t, r in dict(rates).items():
            if not 0.0 <= float(r) <= 1.0:
                raise ValueError(f"synthetic data: {name}[{t!r}] must be in [0, 1], got {r}")


def _problems(cfg: SyntheticConfig, split: str) -> list[_Problem]:
    rng = random.Random(f"tinyllm-synthetic/{cfg.seed}/problems")
    seen: set[str] = set()
    for s in SPLITS:
        out, attempts = [], 0
        while len(out) < cfg.size(s):
            attempts += 1
            if attempts > 50 * cfg.size(s) + 1000:
                raise ValueError(
                    f"synthetic data: could not make {cfg.size(s)} distinct {s} problems; "
                    "lower the split sizes or raise max_events"
                )
            p = _random_problem(rng, cfg.min_events, cfg.max_events)
            q = p.question()
            if q not in seen:
                seen.add(q)
                out.append(p)
        if s == split:
            return out
    raise AssertionError(split)  # pragma: no cover


def generate_split(
    split: str,
    config: SyntheticConfig | None = None,
    teachers: Sequence[str] = ("algebra", "verbal"),
) -> tuple[list[Example], DataReport]:
    """The examples of one split (`train`, `valid`/`validation`, `test`)."""
    cfg = config or SyntheticConfig()
    split = SPLIT_ALIASES.get(split, split)
    if split not in SPLITS:
        raise ValueError(f"synthetic data: unknown split {split!r}; expected train, valid or test")
    teachers = tuple(teachers)
    _check_config(cfg, teachers)
    report = DataReport()
    examples = []
    for i, problem in enumerate(_problems(cfg, split)):
        example_id = f"synthetic-{split}-{i:05d}"
        choice_rng = random.Random(f"tinyllm-synthetic/{cfg.seed}/choices/{example_id}")
        choices, gold, mistakes = _choices(problem, choice_rng)
        rationales, answers = {}, {}
        for t in teachers:
            rationale, stated, erred = _teacher_output(t, problem, mistakes, example_id, cfg)
            rationales[t], answers[t] = rationale, stated
            # Disagreement with gold is counted where labels are applied
            # (labels.apply_label_options, called by the pipeline).
            if rationale is None:
                report.add(f"{t}/missing_rationale")
            elif erred:
                report.add(f"{t}/slipped")
        examples.append(
            Example(
                id=example_id,
                question=problem.question(),
                choices=choices,
                answer=gold,
                rationales=rationales,
                teacher_answers=answers,
            )
        )
    report.add(f"synthetic/{split}/examples", len(examples))
    return examples, report


def config_from(cfg: Any, teachers: Sequence[str] = ()) -> SyntheticConfig:
    """A SyntheticConfig from a ConfigDict/dict (`config.data.synthetic`).

    `error_rates` / `missing_rates` may be a mapping teacher -> rate or a
    sequence aligned with `teachers`; unknown keys are an error so a typo in
    a config does not silently fall back to a default.
    """
    if cfg is None:
        return SyntheticConfig()
    if isinstance(cfg, SyntheticConfig):
        return cfg
    raw = dict(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg)
    fields = {f.name for f in dataclasses.fields(SyntheticConfig)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ValueError(
            f"config.data.synthetic: unknown key(s) {unknown}; expected {sorted(fields)}"
        )
    for key in ("error_rates", "missing_rates"):
        if key in raw and not isinstance(raw[key], Mapping):
            rates = tuple(raw[key])
            if len(rates) != len(teachers):
                raise ValueError(
                    f"config.data.synthetic.{key}: {len(rates)} rates for {len(teachers)} "
                    f"teachers {tuple(teachers)}; give one rate per teacher or a mapping"
                )
            raw[key] = dict(zip(teachers, rates))
        elif key in raw:
            raw[key] = dict(raw[key])
    return SyntheticConfig(**raw)
