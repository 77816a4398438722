"""bench.prompt_authors_protocol's report pieces on made-up results: the other runs' lines and the figure
of a run tested at its final prompts only (--final-only). Pure rendering, no searches."""

from bench.prompt_authors_protocol import SEARCHES, SELECTIONS, figure, other_runs

KEYS = ("authors_test_accuracy", "policy_test_accuracy", "test_accuracy")


def made_up(seed: int, pgg: float, seqpg: float) -> dict:
    """One seed's results: each search's final row only, as --final-only leaves them."""
    accuracy = {"pgg": pgg, "seqpg": seqpg, "random": 60.0, "manual": 70.0, "none": 50.0}
    queries = {"pgg": 1900, "seqpg": 1000, "random": 990}
    result = {"seed": seed, "refit_every": 12, "pgg_online": []}
    result["metrics"] = {
        m: {**dict.fromkeys(KEYS, accuracy[m]), "queries_training": queries.get(m, 0)} for m in accuracy
    }
    for method in SEARCHES:
        result[method] = [{"queries": queries[method], **dict.fromkeys(KEYS, accuracy[method])}]
    return result


def test_other_runs_line_has_each_selection_mean_and_the_seeds_pgg_leads():
    runs = {"prefix_lm, N = 144": [made_up(13, 70.0, 72.0), made_up(21, 74.0, 72.0), made_up(42, 73.0, 72.0)]}
    header, rule, line = other_runs(runs).splitlines()
    assert header.startswith("| run | seeds | pgg, authors' pick")
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:4] == ["prefix_lm, N = 144", "13, 21, 42", "72.3 ± 2.1", "72.3 ± 2.1"]
    assert cells[4:7] == ["72.0 ± 0.0", "72.0 ± 0.0", "60.0 ± 0.0"]
    assert cells[7] == "2 of 3"


def test_final_only_figure_shows_every_selection_at_n_and_against_queries():
    results = [made_up(13, 70.0, 72.0), made_up(21, 74.0, 72.0)]
    by_steps, by_queries = figure(results, 144, "prefix_lm").axes
    assert [t.get_text() for t in by_steps.get_xticklabels()] == [label for *_, label in SELECTIONS]
    assert by_steps.get_xlabel() == "selection, N = 144 policy steps"
    xs = {x for line in by_queries.get_lines() for x in line.get_xdata() if line.get_linestyle() == "None"}
    assert xs == {1900, 1000, 990}  # each search's queries
