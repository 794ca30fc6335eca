"""Reading an offline W&B run's transaction log (`run-<id>.wandb`) in tests.

wandb 0.31 has no Python reader of its own any more (its Go core writes the
file), so this follows the format: a 7-byte header (":W&B", the magic 0xBEE1
little-endian, version 0), then LevelDB log records in 32 KiB blocks, each
record a 7-byte header (CRC32C, length u16 LE, type: 1 full, 2 first, 3
middle, 4 last) and its bytes; the payloads are `wandb_internal_pb2.Record`s.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = 7


def payloads(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data[:4] == b":W&B" and data[4:6] == b"\xe1\xbe", f"{path}: not a W&B log"
    out, pending, at = [], b"", HEADER
    while at + HEADER <= len(data):
        left = BLOCK - at % BLOCK
        if left < HEADER:  # the block's tail is padding
            at += left
            continue
        length, kind = struct.unpack_from("<HB", data, at + 4)
        if kind == 0 and length == 0:  # zero fill
            at += left
            continue
        chunk = data[at + HEADER: at + HEADER + length]
        at += HEADER + length
        if kind == 1:
            out.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            out.append(pending + chunk)
            pending = b""
    return out


def read_run(run_dir: Path) -> dict[str, Any]:
    """{"run": {...}, "config": {...}, "history": [{"_step": n, key: value}, ...]}."""
    from wandb.proto import wandb_internal_pb2 as pb

    (log_file,) = run_dir.glob("run-*.wandb")
    result: dict[str, Any] = {"run": {}, "config": {}, "history": []}
    for raw in payloads(log_file):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            result["run"] = {"project": record.run.project, "name": record.run.display_name,
                             "id": record.run.run_id}
            for item in record.run.config.update:
                result["config"][item.key] = json.loads(item.value_json)
        elif kind == "history":
            row = {}
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            result["history"].append(row)
    return result
