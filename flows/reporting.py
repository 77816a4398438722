"""Pictures and tables of a run: token-reward heatmaps, learning curves, results tables, the logged policy.

Task-agnostic: callers pass a task name, rows of metrics, or (token, reward) pairs. Figures use the
object-oriented matplotlib API (no pyplot state), so they are safe to build from any thread.
"""

from __future__ import annotations

import html
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from matplotlib import colormaps
from matplotlib.colors import Normalize, to_hex
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

COLORMAP = "RdYlGn"  # red = low reward, green = high: readable without a legend, the legend gives values
WORD_MARKERS = ("Ġ", "▁")  # byte-level BPE and SentencePiece mark a token that starts a word


@dataclass(frozen=True)
class TokenRewards:
    """One sequence's tokens with their learned rewards, and a caption (e.g. its sequence score)."""

    caption: str
    pairs: tuple[tuple[str, float], ...]


# --- token-reward heatmap ----------------------------------------------------------------------


def _display_tokens(tokens: list[str]) -> list[tuple[str, bool]]:
    """(text, starts_a_word) per token: '##ing' -> ('ing', False), 'Ġcat' -> ('cat', True)."""
    marked = any(t.startswith(WORD_MARKERS) for t in tokens)
    out = []
    for i, token in enumerate(tokens):
        if marked:
            out.append((token.lstrip("".join(WORD_MARKERS)), token.startswith(WORD_MARKERS) or i == 0))
        elif token.startswith("##"):
            out.append((token[2:], False))
        else:
            out.append((token, True))
    return out


def _reward_range(sequences: list[TokenRewards]) -> Normalize:
    values = [r for s in sequences for _, r in s.pairs] or [0.0]
    low, high = min(values), max(values)
    return Normalize(low, high if high > low else low + 1e-6)


def heatmap_html(sequences: list[TokenRewards], title: str) -> str:
    """A standalone HTML page: each token shaded by its reward on one shared scale, with a legend."""
    norm, cmap = _reward_range(sequences), colormaps[COLORMAP]
    stops = ", ".join(to_hex(cmap(x / 10)) for x in range(11))
    blocks = []
    for seq in sequences:
        spans = []
        for (text, word_start), (_, reward) in zip(
            _display_tokens([t for t, _ in seq.pairs]), seq.pairs, strict=True
        ):
            gap = " " if word_start and spans else ""
            spans.append(
                f'{gap}<span class="t" style="background:{to_hex(cmap(norm(reward)))}" '
                f'title="{reward:.4f}">{html.escape(text)}</span>'
            )
        blocks.append(
            f'<div class="seq"><div class="cap">{html.escape(seq.caption)}</div>{"".join(spans)}</div>'
        )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>
body {{ font-family: sans-serif; margin: 1.5em; max-width: 60em; }}
.seq {{ margin: 0.8em 0; line-height: 1.9; font-size: 15px; }}
.cap {{ color: #555; font-size: 12px; }}
.t {{ padding: 2px 1px; border-radius: 3px; }}
.legend {{ display: flex; align-items: center; gap: 0.5em; font-size: 12px; }}
.bar {{ width: 16em; height: 0.9em; background: linear-gradient(to right, {stops}); }}
</style></head><body>
<h3>{html.escape(title)}</h3>
<div class="legend">token reward <span>{norm.vmin:.3g}</span><span class="bar"></span><span>{norm.vmax:.3g}</span>
&nbsp;(hover a token for its value)</div>
{"".join(blocks)}
</body></html>
"""


def heatmap_figure(sequences: list[TokenRewards], title: str, max_tokens: int = 24) -> Figure:
    """Rows = sequences, cells = tokens coloured by reward (shared scale), with a colour bar."""
    norm, cmap = _reward_range(sequences), colormaps[COLORMAP]
    width = max([min(len(s.pairs), max_tokens) for s in sequences] + [1])
    fig = Figure(figsize=(min(2 + 0.75 * width, 22), 0.9 + 0.55 * len(sequences)), layout="constrained")
    ax = fig.add_subplot()
    grid = [[float("nan")] * width for _ in sequences]
    for row, seq in enumerate(sequences):
        for col, (token, reward) in enumerate(seq.pairs[:max_tokens]):
            grid[row][col] = reward
            red, green, blue, _ = cmap(norm(reward))
            ink = "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"
            ax.text(
                col,
                row,
                token.lstrip("".join(WORD_MARKERS))[:10],
                ha="center",
                va="center",
                fontsize=7,
                color=ink,
            )
    image = ax.imshow(grid, cmap=cmap, norm=norm, aspect="auto")
    ax.set_yticks(range(len(sequences)), [s.caption[:40] for s in sequences], fontsize=7)
    ax.set_xticks([])
    ax.set_title(title, fontsize=9)
    bar = fig.colorbar(image, ax=ax, label="token reward", fraction=0.03)
    bar.formatter = ScalarFormatter(useOffset=False)  # plain values, not "1e-5 + 0.5484"
    return fig


# --- curves and tables -------------------------------------------------------------------------


def learning_curve_figure(
    curves: dict[str, list[dict]], title: str, metrics: list[str] | None = None
) -> Figure:
    """One panel per metric, one line per curve (e.g. per method); x is row['iteration'] or 1, 2, ...

    ``metrics`` defaults to every metric the rows carry except wall-clock seconds.
    """
    if metrics is None:
        keys = {k for rows in curves.values() for row in rows for k in row}
        metrics = sorted(k for k in keys if k != "iteration" and not k.startswith("seconds/"))
    columns = min(3, max(len(metrics), 1))
    rows_of_panels = -(-max(len(metrics), 1) // columns)
    fig = Figure(figsize=(4 * columns, 3 * rows_of_panels), layout="constrained")
    fig.suptitle(title)
    for index, metric in enumerate(metrics):
        ax = fig.add_subplot(rows_of_panels, columns, index + 1)
        for label, rows in curves.items():
            points = [
                (row.get("iteration", i + 1), row[metric]) for i, row in enumerate(rows) if metric in row
            ]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=label)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if len(curves) > 1:
            ax.legend(fontsize=7)
    return fig


def markdown_table(rows: list[dict], columns: list[str] | None = None, digits: int = 3) -> str:
    """A GitHub-markdown table (for Prefect markdown artifacts); columns default to the keys in order."""
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.{digits}f}"
        return "" if value is None else str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# --- MLflow hooks (call inside an active run) --------------------------------------------------


def log_token_heatmap(sequences: list[TokenRewards], name: str, title: str) -> None:
    """``{name}.html`` and ``{name}.png`` under the run's ``token_rewards/`` artifacts."""
    if not sequences:
        return
    mlflow.log_text(heatmap_html(sequences, title), f"token_rewards/{name}.html")
    with warnings.catch_warnings():  # a token the font lacks renders as a box; the HTML page has it right
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        mlflow.log_figure(heatmap_figure(sequences, title), f"token_rewards/{name}.png")


def log_learning_curves(curves: dict[str, list[dict]], title: str, name: str = "learning_curves") -> None:
    if any(curves.values()):
        mlflow.log_figure(learning_curve_figure(curves, title), f"{name}.png")


def log_sample_table(rows: list[dict], name: str) -> None:
    """Sample generations (or prompts) with their sequence scores, as an MLflow table artifact."""
    if rows:
        mlflow.log_table({key: [row.get(key) for row in rows] for key in rows[0]}, f"samples/{name}.json")


def log_policy_model(
    policy_dir: Path, model_code: Path, registered_name: str | None, model_config: dict | None = None
):
    """Log a checkpoint folder as an MLflow pyfunc model; register it under ``registered_name`` if given.

    ``model_code`` is a models-from-code file (e.g. flows/policy_model.py) whose model loads the folder,
    logged as the artifact "policy". A registered version takes the alias ``champion``
    (``models:/NAME@champion``) only on merit (``tracking.crown_on_merit``). Requirements are given,
    not inferred: inference would load the model in a subprocess, which is slow.
    """
    import torch
    import transformers

    info = mlflow.pyfunc.log_model(
        name="policy",
        python_model=str(model_code),
        artifacts={"policy": str(policy_dir)},
        model_config=model_config or {},
        pip_requirements=[
            f"torch=={torch.__version__.split('+')[0]}",
            f"transformers=={transformers.__version__}",
        ],
        registered_model_name=registered_name,
    )
    if registered_name and info.registered_model_version is not None:  # aliases, not deprecated stages
        from flows.tracking import crown_on_merit

        crown_on_merit(registered_name, str(info.registered_model_version))
    return info
