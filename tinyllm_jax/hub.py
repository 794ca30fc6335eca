"""The Hugging Face Hub side of an export: the model card and the upload.

`huggingface_hub` (installed with transformers, the `hf` extra) is imported
only when pushing, and called as `huggingface_hub.create_repo` /
`huggingface_hub.upload_folder` so tests can replace them. Credentials are
huggingface_hub's own: `hf auth login`, or `HF_TOKEN`, or `token=`.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tinyllm_jax.atomic import write_bytes_atomic

HUB_EXTRA = "pip install 'tinyllm_jax[hf]'"
# "name" (under the logged-in account) or "owner/name", as the Hub accepts them.
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


class HubError(ValueError):
    """A push that cannot start or that the Hub refused, said in one line."""


def check_repo_id(repo_id: Any) -> str:
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id) or ".." in repo_id \
            or repo_id.endswith((".git", ".")):
        raise HubError(f"repo id {repo_id!r} is not a Hub model id: expected 'name' or "
                       "'owner/name' (letters, digits, '-', '_', '.')")
    return repo_id


def model_card(run_meta: Mapping[str, Any] | None, step: int | None) -> str:
    """A short README.md: what the folder is, how to load it, where it came from."""
    meta = dict(run_meta or {})
    teachers = ", ".join(meta.get("teachers") or []) or "none (answer task only)"
    lines = [
        "---", "library_name: transformers", "tags:", "- t5", "- tinyllm_jax",
        "- distillation", "---", "", "# T5 student trained with tinyllm_jax", "",
        "A T5 student distilled from teacher rationales (TinyLLM recipe).", "",
        "```python",
        "from transformers import AutoTokenizer, T5ForConditionalGeneration",
        "model = T5ForConditionalGeneration.from_pretrained(REPO_OR_DIR)",
        "tokenizer = AutoTokenizer.from_pretrained(REPO_OR_DIR)",
        "```", "",
        f"- dataset: {meta.get('dataset', 'unknown')}",
        f"- teachers: {teachers}",
        f"- tokenizer: {meta.get('tokenizer', 'unknown')}",
    ]
    if step is not None:
        lines.append(f"- checkpoint step: {step}")
    lines.append("- inputs: `predict: ` (answer) and each teacher's prefix (rationale), "
                 "followed by the question and its lettered options")
    return "\n".join(lines) + "\n"


def write_model_card(directory: str | os.PathLike[str], run_meta: Mapping[str, Any] | None,
                     step: int | None) -> Path:
    path = Path(directory) / "README.md"
    write_bytes_atomic(path, model_card(run_meta, step).encode())
    return path


def _hub() -> Any:
    try:
        return importlib.import_module("huggingface_hub")
    except ImportError:
        raise HubError(f"pushing to the Hub needs huggingface_hub ({HUB_EXTRA})") from None


def push_folder(folder: str | os.PathLike[str], repo_id: str, *, private: bool = False,
                token: str | None = None, commit_message: str = "Upload tinyllm_jax student",
                ) -> str:
    """Create `repo_id` (a model repo; kept if it exists) and upload `folder`
    to it in one commit; returns the commit's URL."""
    check_repo_id(repo_id)
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise HubError(f"{folder}: no config.json; export the student there first")
    hub = _hub()
    try:
        hub.create_repo(repo_id, token=token, private=private, repo_type="model",
                        exist_ok=True)
        info = hub.upload_folder(repo_id=repo_id, folder_path=str(folder), token=token,
                                 repo_type="model", commit_message=commit_message)
    except (OSError, ValueError) as e:
        # huggingface_hub's HTTP errors subclass these (requests' HTTPError is
        # an OSError); authentication is the usual cause.
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise HubError(f"push to {repo_id!r} failed: {first} (log in with `hf auth login` "
                       "or set HF_TOKEN, and check that you may write to that repo)") from e
    return str(getattr(info, "commit_url", None) or info)
