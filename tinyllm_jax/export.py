"""Export a training workdir's student as a Hugging Face folder, optionally pushed to the Hub.

    python -m tinyllm_jax.export --workdir=workdirs/demo --out=export/demo
    python -m tinyllm_jax.export --workdir=workdirs/demo --out=export/demo --push=me/demo-t5

The folder holds config.json, model.safetensors, the tokenizer's files and a
model card (README.md); `transformers.T5ForConditionalGeneration` and
`AutoTokenizer` load it, and so does `Student.load`. It is written beside
`--out` and renamed into place, so an interrupted export leaves no
half-written folder; an existing non-empty `--out` is refused.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from absl import app, flags

from tinyllm_jax.cli import error_boundary, fail
from tinyllm_jax.hub import check_repo_id, push_folder, write_model_card
from tinyllm_jax.student import Student

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir (python -m tinyllm_jax.main).")
_OUT = flags.DEFINE_string("out", None, "Directory to write (must not exist or be empty).")
_WHICH = flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint.")
_PUSH = flags.DEFINE_string("push", None, "Also upload to this Hub repo id ('owner/name').")
_PRIVATE = flags.DEFINE_bool("private", False, "--push: create the repo as private.")


def check_paths(workdir: str | os.PathLike[str], out: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Both paths checked before any checkpoint is read; ValueError says what is wrong."""
    workdir, out = Path(workdir), Path(out)
    if not workdir.is_dir():
        raise ValueError(f"--workdir={workdir}: no such directory")
    if not (workdir / "checkpoints").is_dir():
        raise ValueError(f"--workdir={workdir}: not a training workdir (no checkpoints/; "
                         "train with python -m tinyllm_jax.main --workdir=... first)")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out={out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        raise ValueError(f"--out={out}: exists and is not empty; choose a new directory or "
                         "empty it (an export never mixes with other files)")
    return workdir, out


def export_workdir(workdir: str | os.PathLike[str], out: str | os.PathLike[str], *,
                   which: str = "best") -> tuple[Path, Student]:
    """Write the HF folder of `workdir`'s best (or latest) checkpoint to `out`."""
    workdir, out = check_paths(workdir, out)
    student = Student.from_workdir(workdir, which=which)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        student.save_hf(partial)
        write_model_card(partial, student.run_meta, student.checkpoint_step)
        if out.is_dir():
            out.rmdir()  # empty, checked above
        os.replace(partial, out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return out, student


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}; flags are --workdir, --out, --push")
    if not _WORKDIR.value or not _OUT.value:
        fail("--workdir and --out are required")
    with error_boundary(on_interrupt="export stopped by Ctrl-C; --out was not written"):
        if _PUSH.value:
            check_repo_id(_PUSH.value)  # before the export, not after
        out, student = export_workdir(_WORKDIR.value, _OUT.value, which=_WHICH.value)
        files = ", ".join(sorted(p.name for p in out.iterdir()))
        print(f"exported step {student.checkpoint_step} ({_WHICH.value}) of {_WORKDIR.value} "
              f"to {out}: {files}", flush=True)
        if _PUSH.value:
            url = push_folder(out, _PUSH.value, private=_PRIVATE.value,
                              commit_message=f"Upload tinyllm_jax student (step "
                                             f"{student.checkpoint_step})")
            print(f"pushed to {_PUSH.value}: {url}", flush=True)
    sys.stdout.flush()


def run() -> None:
    app.run(main)


if __name__ == "__main__":
    run()
