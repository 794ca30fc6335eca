"""Teacher-generation config: the ConfigDict layout, its defaults, and validation.

A config file (configs/teachers/*.py) builds the ConfigDict with `base_config`
and `teacher`; the command validates it once into frozen specs so the rest of
the package never reads a ConfigDict and every mistake is reported against the
field that holds it (`config.teachers.flan.kind`), before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import ml_collections

KINDS = ("auto", "causal", "seq2seq")
TEMPLATES = ("auto", "chat", "plain")
BACKENDS = ("hf", "vllm", "auto")
DTYPES = ("auto", "float32", "bfloat16", "float16")
DEMO_RATIONALES_HELP = '"auto" (first teacher with one), "none", or a teacher name'
# What a resumed run does with a stored record whose prompt differs from the
# one it builds now (teachers/resume.py).
PROMPT_MISMATCH = ("refuse", "regenerate")
# Dataset and split names become directory and file names; keep them portable.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Teacher names are also config keys, which `--config.teachers.<name>.x=...`
# can only reach when they are Python identifiers.
_TEACHER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Keys of `generation` handed to the backends; anything else is a typo.
GENERATION_KEYS = (
    "max_new_tokens",
    "do_sample",
    "temperature",
    "top_p",
    "top_k",
    "num_beams",
    "repetition_penalty",
    "no_repeat_ngram_size",
    "seed",
    "stop_strings",
)


class TeacherError(Exception):
    """A user-facing error: bad config, bad store file, unusable model.

    The command prints its message without a traceback, so the message must
    say where the problem is and what was expected.
    """


def generation_defaults() -> ml_collections.ConfigDict:
    """Greedy decoding that stops when the model starts a new question."""
    return ml_collections.ConfigDict(
        {
            "max_new_tokens": 128,
            "do_sample": False,
            "temperature": 1.0,
            "top_p": 1.0,
            "top_k": 50,
            "num_beams": 1,
            "repetition_penalty": 1.0,
            "no_repeat_ngram_size": 0,
            "seed": 0,
            # Few-shot prompts invite the model to write the next question;
            # stopping there saves the tokens the parser would cut anyway.
            "stop_strings": ("\nQuestion:",),
        }
    )


def teacher(model: str, **overrides: Any) -> ml_collections.ConfigDict:
    """One teacher's settings: `model` is an HF hub id or a local directory."""
    cfg = ml_collections.ConfigDict(
        {
            "model": model,
            "tokenizer": "",  # empty: the model's own tokenizer
            "kind": "auto",  # causal | seq2seq | auto (from the model config)
            "template": "auto",  # chat | plain | auto (chat iff the tokenizer has one)
            "instruction": "",  # empty: the built-in instruction for the mode
            "system_prompt": "",
            "backend": "hf",  # hf | vllm | auto (vllm when installed and causal)
            "device_map": "cpu",  # cpu | cuda | cuda:N | auto (needs accelerate)
            "dtype": "auto",  # float32 on CPU, bfloat16 on GPU
            "batch_size": 8,
            "max_prompt_tokens": 0,  # 0: no limit; else drop demos until it fits
            "trust_remote_code": False,
            # Extra keyword arguments for `vllm.LLM(...)` (backend 'vllm'),
            # e.g. {"max_model_len": 4096, "gpu_memory_utilization": 0.8}; on
            # CPU {"kv_cache_memory_bytes": 2**30, "enforce_eager": True}.
            "engine_args": {},
            "generation": generation_defaults(),
        }
    )
    generation = overrides.pop("generation", None)
    cfg.update(overrides)
    if generation:
        cfg.generation.update(generation)
    return cfg


def base_config() -> ml_collections.ConfigDict:
    """Everything except `data` and `teachers`, which each config file sets."""
    return ml_collections.ConfigDict(
        {
            "out_dir": "runs/rationales",
            "splits": ("train", "valid", "test"),
            "max_examples": -1,  # per split, in dataset order; -1: all
            "progress": True,
            # torch CPU threads; 0 keeps torch's default. Tiny models run
            # faster on 1: thread sync costs more than their matmuls.
            "cpu_threads": 0,
            # A stored record whose prompt or question changed since it was
            # written: "refuse" (stop, naming it) or "regenerate" (set it
            # aside in <split>.jsonl.replaced and generate it again).
            "on_prompt_mismatch": "refuse",
            "prompt": {
                "k": 2,
                "seed": 0,
                "teacher_forcing": True,
                "demo_split": "train",
                "demo_rationale": "auto",
                # The paper's in-context example generator: a first pass in
                # which each teacher writes the demos' rationales itself
                # (teachers/demo_generator.py).
                "generate_demos": False,
            },
        }
    )


@dataclasses.dataclass(frozen=True)
class PromptSettings:
    """How prompts are built; identical settings give identical prompts."""

    k: int = 2
    seed: int = 0
    teacher_forcing: bool = True
    demo_split: str = "train"
    demo_rationale: str = "auto"
    generate_demos: bool = False


@dataclasses.dataclass(frozen=True)
class TeacherSpec:
    """A validated teacher entry; `generation` holds only GENERATION_KEYS."""

    name: str
    model: str
    tokenizer: str = ""
    kind: str = "auto"
    template: str = "auto"
    instruction: str = ""
    system_prompt: str = ""
    backend: str = "hf"
    device_map: Any = "cpu"
    dtype: str = "auto"
    batch_size: int = 8
    max_prompt_tokens: int = 0
    trust_remote_code: bool = False
    engine_args: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    generation: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """A validated run: which teachers, splits and prompts, and where to write."""

    out_dir: str
    dataset: str
    splits: tuple[str, ...]
    max_examples: int
    progress: bool
    cpu_threads: int
    prompt: PromptSettings
    teachers: tuple[TeacherSpec, ...]
    on_prompt_mismatch: str = "refuse"


def _choice(where: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise TeacherError(f"{where}: expected one of {', '.join(allowed)}; got {value!r}")
    return value


def _int(where: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TeacherError(f"{where}: expected an integer >= {minimum}; got {value!r}")
    return value


def _generation(where: str, gen: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(gen) - set(GENERATION_KEYS))
    if unknown:
        raise TeacherError(
            f"{where}: unknown key(s) {unknown}; expected some of {list(GENERATION_KEYS)}"
        )
    out = dict(generation_defaults().to_dict())
    out.update(gen)
    _int(f"{where}.max_new_tokens", out["max_new_tokens"], 1)
    _int(f"{where}.num_beams", out["num_beams"], 1)
    _int(f"{where}.top_k", out["top_k"], 0)
    _int(f"{where}.no_repeat_ngram_size", out["no_repeat_ngram_size"], 0)
    _int(f"{where}.seed", out["seed"], 0)
    for key in ("temperature", "top_p", "repetition_penalty"):
        value = out[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise TeacherError(f"{where}.{key}: expected a number > 0; got {value!r}")
        out[key] = float(value)
    if not isinstance(out["do_sample"], bool):
        raise TeacherError(f"{where}.do_sample: expected True or False; got {out['do_sample']!r}")
    stops = out["stop_strings"]
    if isinstance(stops, str) or not all(isinstance(s, str) and s for s in stops):
        raise TeacherError(
            f"{where}.stop_strings: expected a tuple of non-empty strings; got {stops!r}"
        )
    out["stop_strings"] = list(stops)
    return out


# `vllm.LLM` arguments the adapter derives from the teacher's own fields.
ENGINE_ARGS_SET = ("model", "tokenizer", "dtype", "seed", "trust_remote_code")


def _engine_args(where: str, value: Any, backend: str) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise TeacherError(f"{where}: expected a dict of vllm.LLM keyword arguments; got {value!r}")
    taken = sorted(set(value) & set(ENGINE_ARGS_SET))
    if taken:
        raise TeacherError(
            f"{where}: {taken} come from the teacher's own fields "
            f"({', '.join(ENGINE_ARGS_SET)}, generation.seed); set them there"
        )
    if value and backend == "hf":
        raise TeacherError(f"{where}: only the vllm backend reads it; this teacher has backend='hf'")
    return dict(value)


def teacher_spec(name: str, cfg: Mapping[str, Any]) -> TeacherSpec:
    """Validate one `config.teachers.<name>` entry."""
    where = f"config.teachers.{name}"
    if not _TEACHER_RE.match(name):
        raise TeacherError(
            f"{where}: a teacher name must be letters, digits and '_', not starting with a "
            "digit (it is a directory name and a --config.teachers.<name> override key)"
        )
    fields = {f.name for f in dataclasses.fields(TeacherSpec)} - {"name"}
    unknown = sorted(set(cfg) - fields)
    if unknown:
        raise TeacherError(f"{where}: unknown field(s) {unknown}; expected some of {sorted(fields)}")
    model = cfg.get("model")
    if not isinstance(model, str) or not model:
        raise TeacherError(f"{where}.model: expected an HF model id or a local directory")
    device_map = cfg.get("device_map", "cpu")
    if not isinstance(device_map, (str, Mapping)) or not device_map:
        raise TeacherError(
            f"{where}.device_map: expected 'cpu', 'cuda', 'cuda:N', 'auto' or a dict; "
            f"got {device_map!r}"
        )
    return TeacherSpec(
        name=name,
        model=model,
        tokenizer=str(cfg.get("tokenizer", "") or ""),
        kind=_choice(f"{where}.kind", cfg.get("kind", "auto"), KINDS),
        template=_choice(f"{where}.template", cfg.get("template", "auto"), TEMPLATES),
        instruction=str(cfg.get("instruction", "") or ""),
        system_prompt=str(cfg.get("system_prompt", "") or ""),
        backend=_choice(f"{where}.backend", cfg.get("backend", "hf"), BACKENDS),
        device_map=dict(device_map) if isinstance(device_map, Mapping) else device_map,
        dtype=_choice(f"{where}.dtype", cfg.get("dtype", "auto"), DTYPES),
        batch_size=_int(f"{where}.batch_size", cfg.get("batch_size", 8), 1),
        max_prompt_tokens=_int(f"{where}.max_prompt_tokens", cfg.get("max_prompt_tokens", 0), 0),
        trust_remote_code=bool(cfg.get("trust_remote_code", False)),
        engine_args=_engine_args(f"{where}.engine_args", _to_dict(cfg.get("engine_args", {}) or {}),
                                 cfg.get("backend", "hf")),
        generation=_generation(f"{where}.generation", cfg.get("generation", {}) or {}),
    )


def prompt_settings(cfg: Mapping[str, Any]) -> PromptSettings:
    """Validate `config.prompt`."""
    where = "config.prompt"
    demo_rationale = cfg.get("demo_rationale", "auto")
    if not isinstance(demo_rationale, str) or not demo_rationale:
        raise TeacherError(f"{where}.demo_rationale: expected {DEMO_RATIONALES_HELP}")
    teacher_forcing = cfg.get("teacher_forcing", True)
    if not isinstance(teacher_forcing, bool):
        raise TeacherError(f"{where}.teacher_forcing: expected True or False")
    generate_demos = cfg.get("generate_demos", False)
    if not isinstance(generate_demos, bool):
        raise TeacherError(f"{where}.generate_demos: expected True or False, got {generate_demos!r}")
    return PromptSettings(
        generate_demos=generate_demos,
        k=_int(f"{where}.k", cfg.get("k", 2), 0),
        seed=_int(f"{where}.seed", cfg.get("seed", 0), 0),
        teacher_forcing=teacher_forcing,
        demo_split=str(cfg.get("demo_split", "train")),
        demo_rationale=demo_rationale,
    )


def _to_dict(value: Any) -> Any:
    return value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value


def run_spec(config: ml_collections.ConfigDict | Mapping[str, Any]) -> RunSpec:
    """Validate a whole teacher config (see configs/teachers/demo.py)."""
    cfg = _to_dict(config)
    if not isinstance(cfg, Mapping):
        raise TeacherError(f"config: expected a ConfigDict; got {type(config).__name__}")
    for key in ("out_dir", "data", "teachers"):
        if key not in cfg:
            raise TeacherError(f"config.{key}: missing (see configs/teachers/demo.py)")
    data = cfg["data"]
    dataset = data.get("name") if isinstance(data, Mapping) else None
    if not isinstance(dataset, str) or not _NAME_RE.match(dataset):
        raise TeacherError(f"config.data.name: expected a dataset name; got {dataset!r}")
    teachers = cfg["teachers"]
    if not isinstance(teachers, Mapping) or not teachers:
        raise TeacherError("config.teachers: expected at least one teacher entry")
    splits = cfg.get("splits", ("train", "valid", "test"))
    if isinstance(splits, str):
        splits = tuple(s for s in splits.split(",") if s)
    if not splits or not all(isinstance(s, str) and _NAME_RE.match(s) for s in splits):
        raise TeacherError(f"config.splits: expected split names like ('train', 'valid'); got {splits!r}")
    max_examples = cfg.get("max_examples", -1)
    if max_examples != -1:
        _int("config.max_examples", max_examples, 1)
    out_dir = cfg["out_dir"]
    if not isinstance(out_dir, str) or not out_dir:
        raise TeacherError("config.out_dir: expected a directory path")
    return RunSpec(
        out_dir=out_dir,
        dataset=dataset,
        splits=tuple(splits),
        max_examples=max_examples,
        progress=bool(cfg.get("progress", True)),
        cpu_threads=_int("config.cpu_threads", cfg.get("cpu_threads", 0), 0),
        prompt=prompt_settings(cfg.get("prompt", {}) or {}),
        teachers=tuple(teacher_spec(name, _to_dict(t)) for name, t in teachers.items()),
        on_prompt_mismatch=_choice("config.on_prompt_mismatch",
                                   cfg.get("on_prompt_mismatch", "refuse"), PROMPT_MISMATCH),
    )
