"""Write one benchmark's section of BENCHMARKS.md without touching the others.

Each benchmark owns the text between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``.
"""

from __future__ import annotations

import platform
import re
import shlex
import statistics
import sys
from datetime import date
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
HEADER = (
    "# Benchmarks\n\n"
    "Every number here was measured side by side with its baseline in one run, by the command "
    "shown with it. Rerun the command to refresh its section.\n"
)


def machine() -> str:
    return f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def this_command() -> str:
    """The command line of this process, as a reader would type it."""
    script = Path(sys.argv[0])  # `python -m bench.x` shows up as .../bench/x.py in argv
    module = f"-m bench.{script.stem}" if script.parent.name == "bench" else shlex.quote(sys.argv[0])
    return " ".join(["python", module, *(shlex.quote(a) for a in sys.argv[1:])])


def write_section(
    name: str, title: str, body: str, command: str | None = None, measured_on: str | None = None
) -> None:
    """``measured_on``: where the numbers were measured, when not on this machine (the device machine)."""
    command = command or this_command()
    section = (
        f"<!-- bench:{name} -->\n## {title}\n\n"
        f"Command: `{command}`  \nMeasured: {date.today().isoformat()} on {measured_on or machine()}\n\n"
        f"{body.strip()}\n<!-- /bench:{name} -->"
    )
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else HEADER
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
    text = (
        pattern.sub(lambda _: section, text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + section + "\n"
    )
    tmp = BENCHMARKS.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(BENCHMARKS)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def mean_sd(values: list[float], digits: int = 1) -> str:
    """Mean ± sd over seeds; one value alone is printed as it is."""
    if len(values) < 2:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"
