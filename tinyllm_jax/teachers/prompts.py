"""Teacher prompts: k in-context examples, then the question, options and (when
teacher forcing) the gold answer, ending in "Rationale: Let's think step by step."

Layout follows the TinyLLM paper's template (Question / Options / Answer /
Rationale). Demonstrations are drawn per target with an RNG seeded by
(seed, target id), so a prompt depends only on the settings and the example:
a resumed or re-batched run rebuilds exactly the same prompts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Sequence
from typing import Any

from tinyllm_jax.data.example import LETTERS, Example
from tinyllm_jax.teachers.config import PromptSettings, TeacherError
from tinyllm_jax.teachers.parsing import parse_output

RATIONALE_LEAD = "Let's think step by step."
ANSWER_LEAD = "Thus, the answer is"
FORCED_INSTRUCTION = (
    "Each question below comes with its correct answer. Explain step by step why "
    'that answer is correct, and end with "Thus, the answer is (letter) option."'
)
OPEN_INSTRUCTION = (
    "Answer each multiple-choice question. Think step by step, and end with "
    '"Thus, the answer is (letter) option."'
)


def answer_tag(example: Example) -> str:
    """`(d) plants sprouting, blooming and wilting` for the example's answer."""
    try:
        index = example.answer_index
    except ValueError:
        raise TeacherError(
            f"example {example.id!r}: answer {example.answer!r} is not one of its choices"
        ) from None
    return f"({LETTERS[index]}) {example.answer}"


def prompt_hash(text: str) -> str:
    """Short content hash stored with every rationale, to tell prompts apart."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _usable(example: Example, teacher: str) -> bool:
    # A demo pairs the rationale with the gold answer, so a rationale whose
    # teacher reached another answer would demonstrate a contradiction.
    stated = example.teacher_answers.get(teacher)
    return bool(example.rationales.get(teacher)) and stated in (None, example.answer)


def demo_rationale(example: Example, source: str) -> str | None:
    """The rationale a demonstration shows: `source` is a teacher name,
    "auto" (first teacher by name that has one) or "none". Rationales whose
    teacher stated a different answer than the gold one are not shown."""
    if source == "none":
        return None
    names = sorted(example.rationales) if source == "auto" else [source]
    text = next((example.rationales[n] for n in names if _usable(example, n)), None)
    if text is None:
        return None
    # Sources may end with their own "The answer is 14."; the demo states the
    # answer once, in the form the parser reads back.
    return parse_output(text, example.choices).rationale or text.strip()


def demo_pool(examples: Sequence[Example], source: str) -> list[Example]:
    """Demonstration candidates: those with a rationale to show when any have
    one, so a demo teaches the expected output; otherwise all of them."""
    with_rationale = [e for e in examples if demo_rationale(e, source)]
    return with_rationale or list(examples)


def choose_demos(target: Example, pool: Sequence[Example], k: int, seed: int) -> list[Example]:
    """k examples from `pool`, never the target (same id or same question and
    options), reproducible from (seed, target id) alone."""
    if k <= 0 or not pool:
        return []
    rng = random.Random(f"{seed}/{target.id}")
    n = len(pool)
    # A few spare draws cover the excluded target; the full shuffle is only a
    # fallback for tiny pools, since it costs O(n) per example.
    candidates = rng.sample(range(n), min(n, k + 4))
    chosen = [pool[i] for i in candidates if not _same(pool[i], target)][:k]
    if len(chosen) < k and len(candidates) < n:
        order = rng.sample(range(n), n)
        chosen = [pool[i] for i in order if not _same(pool[i], target)][:k]
    return chosen


def _same(a: Example, b: Example) -> bool:
    return a.id == b.id or (a.question == b.question and a.choices == b.choices)


def question_block(example: Example, *, with_answer: bool) -> str:
    """Question, options and optionally the answer, in the paper's layout."""
    options = "\n".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(example.choices))
    block = f"Question:\n{example.question}\nOptions:\n{options}"
    if with_answer:
        block += f"\nAnswer:\n{answer_tag(example)}"
    return block


def demo_completion(example: Example, rationale: str | None) -> str:
    """What a demonstration shows after "Rationale:" (or the chat reply)."""
    closing = f"{ANSWER_LEAD} {answer_tag(example)}."
    if rationale is None:
        return closing
    return f"{RATIONALE_LEAD} {rationale.strip()} {closing}"


@dataclasses.dataclass(frozen=True)
class Prompt:
    """A finished prompt; `query` is the target's own block, for echo removal."""

    id: str
    text: str
    query: str
    demo_ids: tuple[str, ...]

    @property
    def hash(self) -> str:
        return prompt_hash(self.text)


class PromptBuilder:
    """Builds prompts for one teacher: plain text, or the tokenizer's chat template."""

    def __init__(
        self,
        settings: PromptSettings,
        demos: Sequence[Example],
        *,
        template: str = "plain",
        tokenizer: Any = None,
        instruction: str = "",
        system_prompt: str = "",
    ) -> None:
        if template not in ("plain", "chat"):
            raise TeacherError(f"template: expected 'plain' or 'chat'; got {template!r}")
        if template == "chat" and not getattr(tokenizer, "chat_template", None):
            raise TeacherError(
                "template='chat' but the tokenizer has no chat template; "
                "use template='plain' or 'auto'"
            )
        self.settings = settings
        self.pool = demo_pool(demos, settings.demo_rationale)
        self.template = template
        self.tokenizer = tokenizer
        default = FORCED_INSTRUCTION if settings.teacher_forcing else OPEN_INSTRUCTION
        # Plain-text LMs follow the pattern of the demonstrations, not
        # instructions, so plain prompts carry one only when asked to.
        self.instruction = instruction or (default if template == "chat" else "")
        self.system_prompt = system_prompt

    def demos_for(self, target: Example) -> list[Example]:
        return choose_demos(target, self.pool, self.settings.k, self.settings.seed)

    def build(self, target: Example, n_demos: int | None = None) -> Prompt:
        """The prompt for `target`; `n_demos` keeps only the first n demos
        (used to shorten prompts that exceed the model's length)."""
        demos = self.demos_for(target)
        if n_demos is not None:
            demos = demos[:n_demos]
        query = question_block(target, with_answer=self.settings.teacher_forcing)
        if self.template == "chat":
            text = self._chat(query, demos)
        else:
            text = self._plain(query, demos)
        return Prompt(target.id, text, query, tuple(d.id for d in demos))

    def _plain(self, query: str, demos: Sequence[Example]) -> str:
        parts = [self.instruction] if self.instruction else []
        for demo in demos:
            rationale = demo_rationale(demo, self.settings.demo_rationale)
            if rationale is None:
                # Nothing to demonstrate but the format of a solved question.
                parts.append(question_block(demo, with_answer=True))
            else:
                block = question_block(demo, with_answer=self.settings.teacher_forcing)
                parts.append(f"{block}\nRationale:\n{demo_completion(demo, rationale)}")
        parts.append(f"{query}\nRationale:\n{RATIONALE_LEAD}")
        return "\n\n".join(parts)

    def _chat(self, query: str, demos: Sequence[Example]) -> str:
        messages: list[dict[str, str]] = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self.system_prompt})
        users = [question_block(d, with_answer=self.settings.teacher_forcing) for d in demos]
        users.append(query)
        users[0] = f"{self.instruction}\n\n{users[0]}"
        for demo, user in zip(demos, users):
            rationale = demo_rationale(demo, self.settings.demo_rationale)
            messages.append({"role": "user", "content": user})
            messages.append({"role": "assistant", "content": demo_completion(demo, rationale)})
        messages.append({"role": "user", "content": users[-1]})
        try:
            text = self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        except Exception as err:  # jinja templates raise their own exception types
            raise TeacherError(
                f"the tokenizer's chat template rejected the prompt ({err}); "
                "try system_prompt='' or template='plain'"
            ) from err
        # Starting the reply ourselves makes every teacher open the same way.
        return f"{text}{RATIONALE_LEAD}"
