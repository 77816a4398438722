"""What made an upstream output: a record inside it, so a later stage reuses it only if it was made
under the same code and params (the warm start, the encoder cache, the prompt embeddings).

A stage's fingerprint is what DVC compares for that stage, computed by the flow itself: the content of
the code the stage runs (flows/stage_code.py), the values of the params its dvc.yaml entry lists, and
the content of the inputs it reads. An output without a matching record is remade, not trusted: made
by other params (a deployment's overrides), by other code, or interrupted mid-write.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from flows.common import atomic_write_json, content_hash
from flows.stage_code import PROJECT_ROOT, code_hash

RECORD_SUFFIX = ".made_by.json"  # a folder's record is inside it, a file's beside it


@cache
def stage_param_keys(stage: str) -> tuple[str, ...]:
    """The params ``stage`` lists in dvc.yaml (a foreach stage's ``do``): what DVC reruns it on."""
    spec = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"][stage.split("@")[0]]
    return tuple(key for key in spec.get("do", spec).get("params", []) if isinstance(key, str))


def stage_params(config, stage: str) -> dict[str, Any]:
    values = config.model_dump(mode="json")
    out = {}
    for key in stage_param_keys(stage):
        node = values
        for part in key.split("."):
            node = node[part]
        out[key] = node
    return out


def stage_fingerprint(config, stage: str, *inputs: Path) -> str:
    """What ``stage``'s output depends on: its code, its dvc.yaml params and ``inputs`` by content."""
    return content_hash(stage, code_hash(stage), stage_params(config, stage), *inputs)


def record_file(output: Path) -> Path:
    output = Path(output)
    return (
        output / f"made_by{RECORD_SUFFIX}"
        if output.is_dir()
        else output.with_name(output.name + RECORD_SUFFIX)
    )


def made_under(output: Path, fingerprint: str) -> bool:
    record = record_file(output)
    if not Path(output).exists() or not record.exists():
        return False
    try:
        return json.loads(record.read_text()).get("fingerprint") == fingerprint
    except (OSError, ValueError):  # a damaged record is no proof
        return False


def needs_remaking(output: Path, fingerprint: str) -> bool:
    """True unless ``output`` was made under ``fingerprint``; a stale record is dropped first, so an
    output rewritten under other inputs and killed before its new record never passes for the old one."""
    if made_under(output, fingerprint):
        return False
    record_file(output).unlink(missing_ok=True)
    return True


def write_record(output: Path, stage: str, fingerprint: str) -> None:
    """Call once ``output`` is complete: from now on it counts as made under ``fingerprint``."""
    atomic_write_json(record_file(output), {"stage": stage, "fingerprint": fingerprint})
