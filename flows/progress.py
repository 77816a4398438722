"""Progress of the long loops: a tqdm bar with rate and ETA on a terminal, a log line every ~10 % elsewhere.

Logs and CI are not terminals, where a redrawn bar is noise; there the same tqdm meter (count, elapsed,
ETA, rate) goes to the run's logger as one line per tenth. Progress only counts: it consumes no random
numbers and changes no order, so a run's numbers are the same with or without it.
"""

from __future__ import annotations

import logging
import math
import re
import sys
from typing import TextIO

from tqdm import tqdm

LOG_FRACTION = 0.1  # not a terminal: one line per this share of the loop


class _LogLines:
    """A file for tqdm that logs each meter it draws as one line (once per count: close redraws the last)."""

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter):
        self.logger, self.last_count = logger, None

    def write(self, text: str) -> None:
        text = text.strip("\r\n ")
        count = re.search(r"\|\s*(\d+/\d+)\s*\[", text)
        if text and (count is None or count[1] != self.last_count):
            self.logger.info(text)
            self.last_count = count[1] if count else None

    def flush(self) -> None:
        pass


def progress(
    label: str,
    total: int,
    logger: logging.Logger | logging.LoggerAdapter,
    stream: TextIO | None = None,
) -> tqdm:
    """A bar over ``total`` units on ``stream`` (stderr) when it is a terminal, else ``logger`` lines."""
    stream = stream or sys.stderr
    if stream.isatty():
        return tqdm(total=total, desc=label, file=stream, mininterval=0.5, dynamic_ncols=True)
    every = max(1, math.ceil(total * LOG_FRACTION))  # whole units, so a short loop still logs its end
    return tqdm(
        total=total, desc=label, file=_LogLines(logger), mininterval=0, miniters=every, ascii=True
    )  # fmt: skip


def loss_callback(label: str, total: int, logger: logging.Logger | logging.LoggerAdapter):
    """``report(done, loss)``: moves the bar to ``done`` of ``total`` (steps, epochs) with the last loss
    beside it; closes it at ``total`` (an early-stopped fit's bar closes when it is collected)."""
    bar = progress(label, total, logger)

    def report(done: int, loss: float | None = None) -> None:
        if loss is not None:
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return report
