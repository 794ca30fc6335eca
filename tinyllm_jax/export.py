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

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from tinyllm_jax.cli import error_boundary
from tinyllm_jax.hub import check_repo_id, push_folder, write_model_card
from tinyllm_jax.student import Student


def _parser() -> argparse.ArgumentParser:
    # argparse, not absl flags: absl's registry is global, and --workdir is
    # already defined by tinyllm_jax.main in any process that imports both.
    p = argparse.ArgumentParser(
        prog="python -m tinyllm_jax.export",
        description="Export a training workdir's student as a Hugging Face folder.")
    p.add_argument("--workdir", required=True, help="training workdir (python -m tinyllm_jax.main)")
    p.add_argument("--out", required=True, help="directory to write (must not exist or be empty)")
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best",
                   help="which checkpoint (default: best)")
    p.add_argument("--push", default=None, metavar="REPO_ID",
                   help="also upload to this Hub repo ('owner/name')")
    p.add_argument("--private", action="store_true", help="--push: create the repo as private")
    return p


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


def main(argv: Sequence[str] | None = None) -> None:
    """The command; argument mistakes exit 2 with argparse's usage line."""
    args = _parser().parse_args(argv)
    with error_boundary(on_interrupt="export stopped by Ctrl-C; --out was not written"):
        if args.push:
            check_repo_id(args.push)  # before the export, not after
        out, student = export_workdir(args.workdir, args.out, which=args.checkpoint)
        files = ", ".join(sorted(p.name for p in out.iterdir()))
        print(f"exported step {student.checkpoint_step} ({args.checkpoint}) of {args.workdir} "
              f"to {out}: {files}", flush=True)
        if args.push:
            url = push_folder(out, args.push, private=args.private,
                              commit_message=f"Upload tinyllm_jax student (step "
                                             f"{student.checkpoint_step})")
            print(f"pushed to {args.push}: {url}", flush=True)
    sys.stdout.flush()


def run() -> None:
    """The `tinyllm-export` console script."""
    main()


if __name__ == "__main__":
    run()
