"""TFDS builders for the TinyLLM datasets: array_record files, read without TensorFlow.

Each builder reads the TinyLLM layout from a manual dir the user supplies
(`<manual_dir>/<name>/<name>_{split}.json` and `<manual_dir>/<name>/llm/`),
through the same reader as `read_split`, and writes one array_record file per
split. `tfds.data_source` then gives random access to records with no
TensorFlow installed.

What is stored is the option-free form (`read_raw_split`): the file's label
and every built-in teacher's rationale and stated answer, unmasked. Teacher
selection, `label_source`, `drop_disagreeing` and store teachers are applied
when loading, so changing them never needs a rebuild. The parse-time counts
(trimmed runaways, empty rationales, ...) are kept in the dataset's metadata
so `load_tfds_split` reports the same numbers as `read_split`.

Builder names carry a `tinyllm_` prefix: TFDS already registers a `piqa`.
Bump VERSION whenever the reader's parsing or cleaning changes, since
prepared data is reused by version.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

try:
    import tensorflow_datasets as tfds
    from etils import epath
except ImportError as _missing:
    # An optional dependency: only the TFDS builders and config.data.use_tfds need it.
    raise ImportError(
        f"the TFDS builders need TensorFlow Datasets and array-record ({_missing}); "
        "install them with: pip install 'tinyllm_jax[tfds]'"
    ) from _missing

from tinyllm_jax.data.errors import DataError
from tinyllm_jax.data.example import Example
from tinyllm_jax.data.labels import LABEL_SOURCES, apply_label_options
from tinyllm_jax.data.report import DataReport
from tinyllm_jax.data.store import has_store_file, read_store, store_path
from tinyllm_jax.data.teacher_outputs import TeacherOutput, store_outputs
from tinyllm_jax.data.tinyllm import check_teachers, read_raw_split
from tinyllm_jax.data.tinyllm_files import (
    BUILTIN_TEACHERS,
    SPLITS,
    Question,
    question_path,
    teacher_chunk_paths,
)

_INSTRUCTIONS = """\
Point `manual_dir` at a directory holding the TinyLLM layout for this dataset:
  <manual_dir>/{name}/{name}_train.json, {name}_valid.json, {name}_test.json
      (one JSON object per line, or one JSON array, of {{id, question, choices, answer}})
  <manual_dir>/{name}/llm/{{train,valid,test}}_CoT_<k>.json
      (JSON arrays of teacher strings, 500 per chunk)
A split is built when its question file or its teacher files are present.
"""


def _features() -> tfds.features.FeaturesDict:
    text = tfds.features.Text
    # Teachers as a sequence of records, so any number of them fits one
    # schema; the flags tell "no rationale" from an empty string.
    return tfds.features.FeaturesDict(
        {
            "id": text(),
            "question": text(),
            "choices": tfds.features.Sequence(text()),
            "answer": text(),
            "label_source": text(),
            "teachers": tfds.features.Sequence(
                {
                    "name": text(),
                    "rationale": text(),
                    "has_rationale": np.bool_,
                    "answer": text(),
                    "has_answer": np.bool_,
                }
            ),
        }
    )


def example_to_record(example: Example) -> dict[str, Any]:
    """An Example as a TFDS record (None becomes "" plus a False flag)."""
    teachers = []
    for name, rationale in example.rationales.items():
        answer = example.teacher_answers.get(name)
        teachers.append(
            {
                "name": name,
                "rationale": rationale or "",
                "has_rationale": rationale is not None,
                "answer": answer or "",
                "has_answer": answer is not None,
            }
        )
    return {
        "id": example.id,
        "question": example.question,
        "choices": list(example.choices),
        "answer": example.answer,
        "label_source": example.label_source,
        "teachers": teachers,
    }


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def record_to_example(record: Mapping[str, Any]) -> Example:
    """Inverse of `example_to_record` for a record decoded by TFDS."""
    t = record["teachers"]
    names = [_text(n) for n in t["name"]]
    rationales = {
        n: (_text(r) if bool(h) else None)
        for n, r, h in zip(names, t["rationale"], t["has_rationale"])
    }
    answers = {
        n: (_text(a) if bool(h) else None) for n, a, h in zip(names, t["answer"], t["has_answer"])
    }
    return Example(
        id=_text(record["id"]),
        question=_text(record["question"]),
        choices=tuple(_text(c) for c in record["choices"]),
        answer=_text(record["answer"]),
        rationales=rationales,
        teacher_answers=answers,
        label_source=_text(record["label_source"]),
    )


class _TinyLLMBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared body; subclasses set `name` and `DATASET` (the directory name)."""

    DATASET: ClassVar[str] = ""
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Questions, gold/teacher label, FLAN-T5 and LLaMA-2 rationales and stated "
        "answers (LLaMA runaways trimmed, repeats collapsed).",
    }

    # TFDS 4.9 locates a packaged builder's code through
    # `importlib_resources`, which it does not depend on and which is absent
    # from a plain install (ModuleNotFoundError at download_and_prepare). The
    # file path is all it needs it for (to look for a checksums file).
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(inspect.getfile(cls))

    @classmethod
    def _instructions(cls) -> str:
        return _INSTRUCTIONS.format(name=cls.DATASET)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"TinyLLM {self.DATASET}: multiple-choice questions with teacher "
            "rationales (arXiv 2402.04616 layout).",
            features=_features(),
            homepage="https://arxiv.org/abs/2402.04616",
            # Row order is the files' order, so reads match read_split.
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(),
        )

    def _root(self, dl_manager: tfds.download.DownloadManager) -> Path:
        try:
            manual = Path(dl_manager.manual_dir)
        except (AssertionError, ValueError) as e:
            # TFDS says only "does not exist or is empty"; say what belongs there.
            raise DataError(f"no usable manual_dir for {self.name}: {e}",
                            expected=self._instructions()) from None
        if not (manual / self.DATASET).is_dir():
            raise DataError(f"no {self.DATASET}/ directory in the manual dir", path=manual,
                            expected=self._instructions())
        return manual

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        root = self._root(dl_manager)
        generators, reports = {}, {}
        for split in SPLITS:
            if not (question_path(root, self.DATASET, split).is_file()
                    or teacher_chunk_paths(root, self.DATASET, split)):
                continue
            report = DataReport()
            # A split with questions but no teacher files (a user's own data
            # whose rationales live in a store) is built without teachers.
            teachers = BUILTIN_TEACHERS if teacher_chunk_paths(root, self.DATASET, split) else ()
            if not teachers:
                report.note(f"{self.DATASET}/{split}: no teacher files; built without teachers")
            examples = read_raw_split(root, self.DATASET, split, teachers, report=report)
            reports[split] = {"counts": dict(report.counts), "notes": list(report.notes)}
            generators[split] = self._generate_examples(examples)
        if not generators:
            raise DataError(f"no split of {self.DATASET} found", path=root / self.DATASET,
                            expected=self._instructions())
        self.info.metadata["reports"] = reports
        return generators

    def _generate_examples(self, examples: Sequence[Example]) -> Iterator[tuple[int, dict]]:
        # Integer keys in file order: with shuffling disabled TFDS keeps it.
        for row, example in enumerate(examples):
            yield row, example_to_record(example)


class TinyllmObqa(_TinyLLMBuilder):
    name = "tinyllm_obqa"
    DATASET = "obqa"
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS.format(name="obqa")


class TinyllmArc(_TinyLLMBuilder):
    name = "tinyllm_arc"
    DATASET = "arc"
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS.format(name="arc")


class TinyllmPiqa(_TinyLLMBuilder):
    name = "tinyllm_piqa"
    DATASET = "piqa"
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS.format(name="piqa") + (
        "piqa_train.json is not published: train questions are recovered from "
        "llm/train_CoT_*.json and labelled with FLAN-T5's stated answer.\n"
    )


class TinyllmRiddle(_TinyLLMBuilder):
    name = "tinyllm_riddle"
    DATASET = "riddle"
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS.format(name="riddle")


class TinyllmPubmedqa(_TinyLLMBuilder):
    name = "tinyllm_pubmedqa"
    DATASET = "pubmedqa"
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS.format(name="pubmedqa")


class TinyllmBioasq(_TinyLLMBuilder):
    name = "tinyllm_bioasq"
    DATASET = "bioasq"
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS.format(name="bioasq")


BUILDERS: dict[str, type[_TinyLLMBuilder]] = {
    b.DATASET: b
    for b in (TinyllmObqa, TinyllmArc, TinyllmPiqa, TinyllmRiddle, TinyllmPubmedqa, TinyllmBioasq)
}


def prepare(
    name: str, data_dir: str | os.PathLike[str], manual_dir: str | os.PathLike[str] | None
) -> tfds.core.DatasetBuilder:
    """Build `name`'s array_record files under data_dir if not there yet."""
    if name not in BUILDERS:
        raise DataError(f"no TFDS builder for {name!r}", field="name",
                        expected=f"one of {sorted(BUILDERS)}")
    builder = BUILDERS[name](data_dir=os.fspath(data_dir), file_format="array_record")
    config = tfds.download.DownloadConfig(
        manual_dir=None if manual_dir is None else os.fspath(manual_dir),
        # Everything is local; never ask GCS for a prepared copy.
        try_download_gcs=False,
    )
    builder.download_and_prepare(download_config=config)
    return builder


def _parse_counts(builder: tfds.core.DatasetBuilder, split: str, keep: set[str]) -> DataReport:
    report = DataReport()
    saved = (builder.info.metadata or {}).get("reports", {}).get(split, {})
    for key, n in saved.get("counts", {}).items():
        owner = key.split("/", 1)[0] if "/" in key else None
        # Counts of teachers that were not asked for (or that a store file
        # replaces) do not describe what is returned.
        if owner is None or owner not in BUILTIN_TEACHERS or owner in keep:
            report.add(key, n)
    for note in saved.get("notes", []):
        report.note(note)
    return report


def load_tfds_split(
    name: str,
    split: str,
    data_dir: str | os.PathLike[str],
    manual_dir: str | os.PathLike[str] | None,
    teachers: Sequence[str],
    *,
    label_source: str = "gold",
    drop_disagreeing: bool = False,
    store_dir: str | os.PathLike[str] | None = None,
    store_mismatch: str = "refuse",
) -> tuple[list[Example], DataReport]:
    """`read_split`'s result, through TFDS: builds the dataset if needed, reads
    it with `tfds.data_source` and applies the same options. Teachers with a
    file in `store_dir` are joined from there, as in `read_split`."""
    if label_source not in LABEL_SOURCES:
        raise DataError(f"unknown label_source {label_source!r}", field="label_source",
                        expected=f"one of {list(LABEL_SOURCES)}")
    teachers = check_teachers(teachers)
    builder = prepare(name, data_dir, manual_dir)
    if split not in builder.info.splits:
        raise DataError(f"{builder.name} has no split {split!r}", path=builder.data_dir,
                        field="split", expected=f"one of {sorted(builder.info.splits)}")
    source = tfds.data_source(builder.name, split=split, data_dir=os.fspath(data_dir),
                              download=False, builder_kwargs={"file_format": "array_record"})
    # Every record lists the same teachers; check the request before decoding all.
    stored = set(record_to_example(source[0]).rationales) if len(source) else set()
    from_store = {t for t in teachers
                  if store_dir is not None and has_store_file(store_path(store_dir, name, t, split))}
    for t in teachers:
        if t not in from_store and t not in stored:
            raise DataError(f"unknown teacher {t!r} for {name}/{split}", field="teachers",
                            expected=f"one of {sorted(stored)} or a teacher with a file "
                            f"{store_path(store_dir or '<store_dir>', name, t, split)}")
    report = _parse_counts(builder, split, {t for t in teachers if t not in from_store})
    raw = [record_to_example(r) for r in source.__getitems__(range(len(source)))]
    questions = [Question(e.id, e.question, e.choices, e.answer, row) for row, e in enumerate(raw)]
    outputs: dict[str, list[TeacherOutput]] = {
        t: store_outputs(t, read_store(store_path(store_dir, name, t, split)), questions,
                         f"{builder.name}/{split}", report, mismatch=store_mismatch)
        for t in sorted(from_store)
    }
    examples = [
        Example(
            id=e.id, question=e.question, choices=e.choices, answer=e.answer,
            rationales={t: (outputs[t][i].rationale if t in outputs else e.rationales[t])
                        for t in teachers},
            teacher_answers={t: (outputs[t][i].answer if t in outputs else e.teacher_answers[t])
                             for t in teachers},
            label_source=e.label_source,
        )
        for i, e in enumerate(raw)
    ]
    examples = apply_label_options(examples, teachers, label_source=label_source,
                                   drop_disagreeing=drop_disagreeing, report=report)
    report.add("examples", len(examples))
    return examples, report
