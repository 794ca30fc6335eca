"""What a mistyped `--config.x=...` override should have been: the fields next to it.

    override_help(["prog", "--config=configs/tiny.py", "--config.train.lrr=1"])
    # "config.train has no field 'lrr'; did you mean 'log_every'? its fields: [...]"

ml_collections' own error names only the missing key; this loads the same
config file and lists the section's real fields (with close matches), so the
user need not open the file. Every field with its value:
`python -m tinyllm_jax.main --mode=print_config --config=FILE`.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from tinyllm_jax.configs import load_config_file

PRINT_CONFIG = ("`python -m tinyllm_jax.main --mode=print_config --config=FILE` prints every "
                "field with its value")


def config_argument(argv: Sequence[str]) -> str | None:
    """The value of --config in `argv` (`path` or `path:arg`), if any."""
    for i, a in enumerate(argv):
        if a.startswith("--config="):
            return a.split("=", 1)[1]
        if a == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def override_names(argv: Sequence[str]) -> list[str]:
    """["train.lrr", ...] for each `--config.train.lrr=...` in `argv`."""
    return [a.split("=", 1)[0].removeprefix("--config.") for a in argv
            if a.startswith("--config.")]


def _as_mapping(node: Any) -> Mapping[str, Any] | None:
    if hasattr(node, "keys") and hasattr(node, "__getitem__"):
        return node
    return None


def field_problem(config: Any, name: str) -> str | None:
    """Why `config.<name>` is not a field (its section's fields listed), or
    what the field holds when it is one (for a value of the wrong type)."""
    node, parts = config, name.split(".")
    for i, part in enumerate(parts):
        section = _as_mapping(node)
        where = ".".join(["config", *parts[:i]])
        if section is None:
            return f"{where} is a value ({node!r}), not a section; it has no field {part!r}"
        if part not in section:
            fields = sorted(section.keys())
            close = difflib.get_close_matches(part, fields, n=3)
            guess = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            return f"{where} has no field {part!r}{guess}; its fields: {fields}"
        node = section[part]
    if _as_mapping(node) is not None:
        return f"config.{name} is a section; set one of its fields: {sorted(node.keys())}"
    return f"config.{name} holds {node!r} ({type(node).__name__})"


def override_help(argv: Sequence[str]) -> str:
    """One line per bad override naming the real fields, then how to see them all."""
    lines = []
    arg = config_argument(argv)
    if arg:
        path, _, config_arg = arg.partition(":")
        try:
            config = load_config_file(path, config_arg or None)
        except Exception:  # the config file itself fails: its own error says why
            config = None
        if config is not None:
            lines += [p for n in override_names(argv) if (p := field_problem(config, n))]
    elif override_names(argv):
        lines.append("--config.x overrides change the file --config names, and none is given; "
                     "to change a field of a workdir's saved config: "
                     "--config=configs/workdir/saved.py:WORKDIR --config.x=...")
    lines.append(PRINT_CONFIG + ".")
    return "\n".join(lines)
