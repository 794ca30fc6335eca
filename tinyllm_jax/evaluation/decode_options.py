"""How answers are decoded: greedy, beam search or sampling, with HF's option names.

    DecodeOptions()                                   greedy
    DecodeOptions(num_beams=4, length_penalty=0.6)    beam search (HF's semantics)
    DecodeOptions(do_sample=True, top_p=0.9, seed=1)  sampling

The defaults are HF `generate`'s, top_k=50 included (it only matters with
do_sample). Plain Python, no JAX: the config parser checks these too.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

EARLY_STOPPING_VALUES = (False, True, "never")
MAX_SEED = 2**32 - 1


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
    num_beams: int = 1
    length_penalty: float = 1.0  # beam search: score = log p / length ** length_penalty
    early_stopping: bool | str = False  # beam search: True, False or "never", as HF
    do_sample: bool = False
    temperature: float = 1.0  # sampling only, as the three below
    top_k: int = 50  # 0 = no top-k filter
    top_p: float = 1.0  # 1.0 = no nucleus filter
    seed: int = 0

    @property
    def mode(self) -> str:
        """"greedy", "beam" or "sample"."""
        if self.do_sample:
            return "sample"
        return "beam" if self.num_beams > 1 else "greedy"

    def problems(self) -> list[tuple[str, Any, str]]:
        """(field, value, what is allowed) for every bad field; [] when all are good."""
        out = []

        def integer(name: str, lo: int, hi: int | None, allowed: str) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo or (
                    hi is not None and v > hi):
                out.append((name, v, allowed))

        def number(name: str, ok: Any, allowed: str) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) \
                    or not ok(v):
                out.append((name, v, allowed))

        integer("num_beams", 1, None, "must be an integer >= 1 (1 = no beam search)")
        number("length_penalty", lambda v: True, "must be a finite number (1.0 = HF's "
               "default; > 0 favours longer answers, < 0 shorter ones)")
        es = self.early_stopping
        if not (isinstance(es, bool) or es == "never"):
            out.append(("early_stopping", es, "must be True, False or 'never' (HF's meanings)"))
        if not isinstance(self.do_sample, bool):
            out.append(("do_sample", self.do_sample, "must be True or False"))
        number("temperature", lambda v: v > 0, "must be a finite number > 0")
        integer("top_k", 0, None, "must be an integer >= 0 (0 = no top-k filter)")
        number("top_p", lambda v: 0 < v <= 1, "must be a number in (0, 1] (1 = no top-p "
               "filter)")
        integer("seed", 0, MAX_SEED, f"must be an integer from 0 to {MAX_SEED}")
        if self.do_sample is True and isinstance(self.num_beams, numbers.Integral) \
                and self.num_beams > 1:
            out.append(("num_beams", self.num_beams, "must be 1 with do_sample=True: beam "
                        "sampling is not implemented (use one or the other)"))
        return out

    def checked(self, where: str) -> DecodeOptions:
        """These options with plain int/float values (NumPy scalars are fine
        inputs), or a ValueError naming every bad field, its value and what
        is allowed."""
        bad = self.problems()
        if bad:
            raise ValueError(f"{where}: " + "; ".join(f"{k}={v!r} {allowed}"
                                                      for k, v, allowed in bad))
        return dataclasses.replace(
            self, num_beams=int(self.num_beams), length_penalty=float(self.length_penalty),
            temperature=float(self.temperature), top_k=int(self.top_k),
            top_p=float(self.top_p), seed=int(self.seed))


DECODE_FIELDS = tuple(f.name for f in dataclasses.fields(DecodeOptions))


def options_of(source: Any) -> DecodeOptions:
    """The DecodeOptions of anything with those attribute names (an EvalSpec)."""
    return DecodeOptions(**{name: getattr(source, name) for name in DECODE_FIELDS})
