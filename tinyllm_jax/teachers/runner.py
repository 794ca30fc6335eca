"""From a validated config to store files: data, prompts, backends, splits.

Teachers run one after another and each model is released before the next is
loaded, so two 7B teachers never share one GPU's memory.
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Callable, Sequence
from typing import Any

from tinyllm_jax.data.errors import DataError
from tinyllm_jax.data.example import Example
from tinyllm_jax.data.files import check_regular
from tinyllm_jax.data.pipeline import load_examples
from tinyllm_jax.data.store import STORE_FORMAT, store_path
from tinyllm_jax.spec import data_spec
from tinyllm_jax.teachers import backends, demo_generator
from tinyllm_jax.teachers.config import RunSpec, TeacherError, TeacherSpec
from tinyllm_jax.teachers.generate import SplitResult, generate_split
from tinyllm_jax.teachers.prompts import PromptBuilder
from tinyllm_jax.teachers.store_lock import lock_path


def load_split(data_cfg: Any, split: str) -> list[Example]:
    """One split through the training pipeline's reader, so teachers see the
    same examples (ids, questions, choices) the student will be trained on."""
    loaded = load_examples(data_spec(data_cfg), split)
    # Readers return (examples, DataReport); accept a bare list as well.
    examples = loaded[0] if isinstance(loaded, tuple) else loaded
    return list(examples)


def generation_record(run: RunSpec, spec: TeacherSpec, backend: str, kind: str, template: str) -> dict:
    """The `generation` dict written on every line: what produced it."""
    p = run.prompt
    return {
        **spec.generation,
        "backend": backend,
        "kind": kind,
        "template": template,
        "dtype": spec.dtype,
        "k": p.k,
        "teacher_forcing": p.teacher_forcing,
        "prompt_seed": p.seed,
        "demo_split": p.demo_split,
        "demo_rationale": p.demo_rationale,
        # Only when on, so stores written before the switch existed resume.
        **({"generate_demos": True} if p.generate_demos else {}),
    }


class _Splits:
    """Loads each split once for all teachers."""

    def __init__(self, data_cfg: Any, limit: int) -> None:
        self.data_cfg = data_cfg
        self.limit = limit
        self.cache: dict[str, list[Example]] = {}

    def all(self, split: str) -> list[Example]:
        if split not in self.cache:
            self.cache[split] = load_split(self.data_cfg, split)
        return self.cache[split]

    def targets(self, split: str) -> list[Example]:
        examples = self.all(split)
        return examples if self.limit < 0 else examples[: self.limit]


def prepare_outputs(run_spec: RunSpec) -> None:
    """Make every store file's directory and check that nothing but a store
    file (and its lock) sits where they belong, before any model is loaded:
    a bad out_dir must not cost the minutes a 7B model takes to load. OS
    errors (a file in the path, a full disk, a name too long) propagate with
    their path for the command's error boundary."""
    for spec in run_spec.teachers:
        for split in run_spec.splits:
            path = store_path(run_spec.out_dir, run_spec.dataset, spec.name, split)
            path.parent.mkdir(parents=True, exist_ok=True)
            for target, what in ((path, STORE_FORMAT), (lock_path(path), "its lock file")):
                try:
                    check_regular(target, missing_ok=True, expected=what)
                except DataError as err:
                    raise TeacherError(f"{err}; move it away or choose another out_dir") from err


def _release(engine: Any) -> None:
    del engine
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch is needed to get here
        pass


def run(
    run_spec: RunSpec,
    data_cfg: Any,
    *,
    dry_run: int = 0,
    echo: Callable[[str], None] = print,
) -> list[SplitResult]:
    """Generate (or with `dry_run` > 0 only print the prompts of the first
    `dry_run` examples of) every teacher x split of the config."""
    splits = _Splits(data_cfg, run_spec.max_examples)
    demos = splits.all(run_spec.prompt.demo_split)
    if not demos and run_spec.prompt.k:
        raise TeacherError(
            f"config.prompt.demo_split: split {run_spec.prompt.demo_split!r} of "
            f"{run_spec.dataset!r} is empty; in-context examples are drawn from it"
        )
    if not dry_run:
        prepare_outputs(run_spec)
    if run_spec.cpu_threads and not dry_run:
        import torch

        torch.set_num_threads(run_spec.cpu_threads)
    results: list[SplitResult] = []
    for spec in run_spec.teachers:
        tokenizer = backends.load_tokenizer(spec)
        kind = backends.resolve_kind(spec)
        template = backends.resolve_template(spec, tokenizer)
        name = backends.backend_name(spec, kind)
        loaded: list[Any] = []

        def engine(spec=spec, tokenizer=tokenizer, kind=kind, name=name, loaded=loaded):
            if not loaded:
                echo(f"loading teacher {spec.name}: {spec.model} ({kind}, backend {name})")
                loaded.append(backends.load_backend(name, spec, tokenizer, kind))
            return loaded[0]

        add_special = template != "chat"  # a chat template renders its own BOS
        settings, demo_examples = run_spec.prompt, demos
        if settings.generate_demos:
            own = _own_demos(run_spec, spec, demos, template, tokenizer, name, kind, engine,
                             add_special, dry_run, echo)
            if own is None:  # a dry run before the demo pass has run
                continue
            settings, demo_examples = demo_generator.main_pass_settings(settings, spec.name), own
        builder = PromptBuilder(
            settings,
            demo_examples,
            template=template,
            tokenizer=tokenizer,
            instruction=spec.instruction,
            system_prompt=spec.system_prompt,
        )
        if dry_run:
            _print_prompts(spec, kind, template, builder, tokenizer, add_special, splits.targets,
                           run_spec.splits, dry_run, echo)
            continue
        for split in run_spec.splits:
            result = generate_split(
                teacher=spec.name,
                split=split,
                examples=splits.targets(split),
                builder=builder,
                backend=engine,
                out_path=store_path(run_spec.out_dir, run_spec.dataset, spec.name, split),
                model=spec.model,
                generation=generation_record(dataclasses.replace(run_spec, prompt=settings), spec,
                                             name, kind, template),
                batch_size=spec.batch_size,
                add_special_tokens=add_special,
                progress=run_spec.progress,
                on_prompt_mismatch=run_spec.on_prompt_mismatch,
            )
            echo(result.format())
            results.append(result)
        if loaded:
            _release(loaded.pop())
    return results


def _own_demos(
    run_spec: RunSpec, spec: TeacherSpec, demos: Sequence[Example], template: str,
    tokenizer: Any, name: str, kind: str, engine: Callable[[], Any], add_special: bool,
    dry_run: int, echo: Callable[[str], None],
) -> list[Example] | None:
    """The demo pass of one teacher (demo_generator.py): its rationales for the
    demo questions, generated or resumed. A dry run prints the pass's prompts
    and returns the stored demos when the pass is complete, else None."""
    questions = demo_generator.demo_questions(demos, run_spec.prompt)
    out_path = store_path(run_spec.out_dir, run_spec.dataset, spec.name, demo_generator.DEMO_PASS)
    zero_shot = demo_generator.zero_shot_settings(run_spec.prompt)
    if dry_run:
        builder = PromptBuilder(zero_shot, [], template=template, tokenizer=tokenizer,
                                instruction=spec.instruction, system_prompt=spec.system_prompt)
        _print_prompts(spec, kind, template, builder, tokenizer, add_special,
                       lambda _: questions, (demo_generator.DEMO_PASS,),
                       len(questions), echo)
        try:
            return demo_generator.with_own_rationales(questions, spec.name, out_path)
        except (TeacherError, DataError):
            echo(f"(teacher {spec.name}: the main pass shows the demo pass's rationales, "
                 f"not written yet to {out_path}; its prompts are not shown)")
            return None
    record = generation_record(dataclasses.replace(run_spec, prompt=zero_shot), spec, name,
                               kind, template)

    def run_split(**kw: Any) -> SplitResult:
        return generate_split(
            teacher=spec.name, backend=engine, model=spec.model,
            generation={**record, "pass": demo_generator.DEMO_PASS},
            batch_size=spec.batch_size, add_special_tokens=add_special,
            progress=run_spec.progress, on_prompt_mismatch=run_spec.on_prompt_mismatch, **kw)

    result, own = demo_generator.generate_demos(
        teacher=spec.name, questions=questions, settings=run_spec.prompt, template=template,
        tokenizer=tokenizer, instruction=spec.instruction, system_prompt=spec.system_prompt,
        out_path=out_path, run_split=run_split)
    echo(result.format())
    return own


def _print_prompts(
    spec: TeacherSpec,
    kind: str,
    template: str,
    builder: PromptBuilder,
    tokenizer: Any,
    add_special: bool,
    targets: Callable[[str], Sequence[Example]],
    names: Sequence[str],
    n: int,
    echo: Callable[[str], None],
) -> None:
    for split in names:
        for example in targets(split)[:n]:
            prompt = builder.build(example)
            tokens = len(tokenizer(prompt.text, add_special_tokens=add_special)["input_ids"])
            echo(
                f"===== teacher {spec.name} ({spec.model}, {kind}, {template} template) | "
                f"split {split} | id {example.id} | demos {list(prompt.demo_ids)} | "
                f"{tokens} tokens | prompt_hash {prompt.hash} ====="
            )
            echo(prompt.text)
