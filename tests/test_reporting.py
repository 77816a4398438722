"""Heatmaps, curves and tables of flows/reporting.py: pure rendering, no servers."""

import re

from matplotlib.colors import to_rgb

from flows import reporting as r

SEQUENCES = [
    r.TokenRewards("best · score 0.9", (("the", 0.1), ("cat", 0.9), ("##s", 0.5))),
    r.TokenRewards("worst · score 0.1", (("Ġa", 0.2), ("Ġdog<", 0.3))),
]


def test_heatmap_html_shades_each_token_on_one_scale():
    page = r.heatmap_html(SEQUENCES, "iteration 1")
    spans = re.findall(
        r'<span class="t" style="background:(#[0-9a-f]{6})" title="([0-9.]+)">([^<]*)</span>', page
    )
    assert [(text, float(value)) for _, value, text in spans] == [
        ("the", 0.1),
        ("cat", 0.9),
        ("s", 0.5),
        ("a", 0.2),
        ("dog&lt;", 0.3),  # escaped, word markers stripped
    ]
    colours = {text: to_rgb(colour) for colour, _, text in spans}
    assert colours["cat"][1] > colours["the"][1] and colours["the"][0] > colours["cat"][0]  # high = green
    assert "cat</span><span" in page  # '##s' continues the word: no space before it
    assert "0.1" in page and "0.9" in page and "token reward" in page  # the legend's range


def test_heatmap_figure_has_a_row_per_sequence_and_a_colour_bar():
    fig = r.heatmap_figure(SEQUENCES, "iteration 1")
    heat, bar = fig.axes
    assert heat.images[0].get_array().shape == (2, 3)
    assert [t.get_text() for t in heat.get_yticklabels()] == ["best · score 0.9", "worst · score 0.1"]
    assert bar.get_ylabel() == "token reward"


def test_learning_curves_plot_one_panel_per_metric_and_skip_seconds():
    rows = [{"iteration": 1, "val/rougeL": 1.0, "seconds/train": 3.0}, {"iteration": 2, "val/rougeL": 2.0}]
    fig = r.learning_curve_figure({"pgg": rows, "mle": rows[:1]}, "curves")
    assert [ax.get_title() for ax in fig.axes] == ["val/rougeL"]
    assert [list(line.get_xdata()) for line in fig.axes[0].lines] == [[1, 2], [1]]


def test_markdown_table():
    table = r.markdown_table([{"method": "pgg", "rougeL": 21.23456}, {"method": "a|b", "n": 3}])
    assert table.splitlines() == [
        "| method | rougeL | n |",
        "|---|---|---|",
        "| pgg | 21.235 |  |",
        "| a\\|b |  | 3 |",
    ]
