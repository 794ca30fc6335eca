"""Convert the published TinyLLM rationales into this project's store.

    python -m tinyllm_jax.teachers.importer --root=../shared/data/tinyllm \
        --datasets=obqa,piqa --out=runs/rationales [--splits=train,valid,test] [--overwrite]

writes `<out>/<dataset>/{flan,llama}/<split>.jsonl` in the same line format as
generated rationales, so published and newly generated teachers are read the
same way (`read_split(..., store_dir=out)`, `config.data.rationale_store`).
Parsing of the published strings is the data reader's (data/tinyllm.py), so
the store holds exactly what training on the raw files would see. A teacher
with no rationale at all in a split (LLaMA in PIQA) gets no file.

Each file is written to a temporary name, fsynced and renamed: an import is
all or nothing, and an existing file is kept unless --overwrite is given.
Every record carries the `question_hash` of its question (data/provenance.py),
so a later join onto edited questions is refused. Each file is written under
its store lock (store_lock.py), like generation. A directory or device where
a store file belongs, or an OS error (a file in the --out path, a full disk),
is one line `error: <path>: ...` and exit status 2; files already imported stay.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from tinyllm_jax.atomic import fsync_dir, temporary_name
from tinyllm_jax.data.errors import DataError
from tinyllm_jax.data.provenance import QUESTION_HASH, question_hash
from tinyllm_jax.data.report import DataReport
from tinyllm_jax.data.store import append_records, has_store_file, store_path
from tinyllm_jax.data.tinyllm import read_split
from tinyllm_jax.teachers.config import TeacherError
from tinyllm_jax.teachers.os_errors import os_error_line
from tinyllm_jax.teachers.store_lock import store_lock

# The models that wrote the published files (../shared/README.md).
PUBLISHED_MODELS = {
    "flan": "google/flan-t5-xl",
    "llama": "meta-llama/Llama-2-7b-chat-hf",
}
SPLITS = ("train", "valid", "test")


@dataclasses.dataclass
class ImportResult:
    dataset: str
    split: str
    teacher: str
    path: Path
    rows: int = 0
    rationales: int = 0
    status: str = "written"  # written | exists | no_rationales

    def format(self) -> str:
        if self.status == "no_rationales":
            return f"{self.dataset}/{self.teacher}/{self.split}: no rationales in the source; no file"
        if self.status == "exists":
            return f"{self.path}: exists, kept (use --overwrite to replace)"
        return f"{self.path}: {self.rows} rows, {self.rationales} with a rationale"


def _write_atomic(path: Path, records: list[dict]) -> None:
    tmp = temporary_name(path)
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()  # left by an import that was killed
    try:
        # The store's own appender validates and encodes the records; the
        # rename makes the whole file appear at once.
        append_records(tmp, records)
        os.replace(tmp, path)
    except BaseException:
        # A full disk (or Ctrl-C) leaves the old file and no half-written one.
        if tmp.is_file():
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def _present(path: Path) -> bool:
    """Whether a store file is there; anything else there is a TeacherError."""
    try:
        return has_store_file(path)
    except DataError as err:
        raise TeacherError(f"{err}; move it away or choose another --out") from err


def import_split(
    root: str | os.PathLike[str],
    dataset: str,
    split: str,
    out_dir: str | os.PathLike[str],
    *,
    teachers: Sequence[str] = ("flan", "llama"),
    overwrite: bool = False,
    report: DataReport | None = None,
) -> list[ImportResult]:
    """Import one split's published teachers; returns one result per teacher."""
    unknown = sorted(set(teachers) - set(PUBLISHED_MODELS))
    if unknown:
        raise TeacherError(f"--teachers: {unknown} are not published TinyLLM teachers "
                           f"(expected some of {sorted(PUBLISHED_MODELS)})")
    results = [
        ImportResult(dataset, split, t, store_path(out_dir, dataset, t, split)) for t in teachers
    ]
    # Every target checked before anything is written: a directory where the
    # second file belongs must not stop the import after the first.
    present = [_present(r.path) for r in results]
    if not overwrite and all(present):
        for r in results:
            r.status = "exists"
        return results
    # Read without the store: the published files are the source here.
    examples, split_report = read_split(root, dataset, split, tuple(teachers))
    if report is not None:
        report.merge(split_report)
    for result in results:
        t = result.teacher
        result.rows = len(examples)
        result.rationales = sum(e.rationales.get(t) is not None for e in examples)
        if result.rationales == 0:
            result.status = "no_rationales"
            continue
        records = [
            {
                "id": e.id,
                QUESTION_HASH: question_hash(e.question, e.choices, e.answer),
                "rationale": e.rationales.get(t),
                "teacher_answer": e.teacher_answers.get(t),
                "prompt_hash": None,  # the published prompts are not known
                "model": PUBLISHED_MODELS[t],
                "generation": {"source": "tinyllm-published", "teacher": t},
                "error": None,
                "notes": [],
                "demo_ids": [],
                "raw": None,
            }
            for e in examples
        ]
        result.path.parent.mkdir(parents=True, exist_ok=True)
        with store_lock(result.path):
            if _present(result.path) and not overwrite:
                result.status = "exists"
                continue
            _write_atomic(result.path, records)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m tinyllm_jax.teachers.importer",
        description="Convert the published TinyLLM rationales into the rationale store.",
    )
    parser.add_argument("--root", required=True, help="TinyLLM data root, e.g. ../shared/data/tinyllm")
    parser.add_argument("--datasets", required=True, help="comma list, e.g. obqa,piqa")
    parser.add_argument("--out", required=True, help="store directory, e.g. runs/rationales")
    parser.add_argument("--splits", default=",".join(SPLITS))
    parser.add_argument("--teachers", default="flan,llama")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    split_names = [s for s in args.splits.split(",") if s]
    datasets = [d for d in args.datasets.split(",") if d]
    teachers = [t for t in args.teachers.split(",") if t]
    for flag, values, example in (("--datasets", datasets, "obqa,piqa"),
                                  ("--splits", split_names, "train,valid"),
                                  ("--teachers", teachers, "flan,llama")):
        if not values:
            # An empty list would import nothing and exit 0.
            print(f"error: {flag}: names nothing; give a comma list, e.g. {flag}={example}",
                  file=sys.stderr)
            return 2
    try:
        # Before any reading: a bad --out must not wait for a large dataset.
        Path(args.out).mkdir(parents=True, exist_ok=True)
        for dataset in datasets:
            report = DataReport()
            for split in split_names:
                results = import_split(
                    args.root, dataset, split, args.out, teachers=teachers,
                    overwrite=args.overwrite, report=report,
                )
                for result in results:
                    print(result.format())
            print(report.format(f"{dataset} reader report"))
    except (TeacherError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: {os_error_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the files imported so far are kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
