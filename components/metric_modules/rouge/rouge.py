"""ROUGE as a local `evaluate` metric, so pgg never fetches a metric script from the hub.

Load it by path: ``evaluate.load("components/metric_modules/rouge/rouge.py")`` (see
``components/rouge.py``, which does that for you). Scores are F1 values in [0, 1] from
Google's ``rouge_score`` package. ``rougeLsum`` splits both texts on newlines into
sentences; put one sentence per line. With ``use_aggregator=True`` (default) each score is
the plain mean over examples (deterministic, no bootstrap); with ``False`` each key maps to
the list of per-example scores.
"""

import datasets
import evaluate
from rouge_score import rouge_scorer

_DESCRIPTION = "ROUGE-1/2/L/Lsum F1 of predictions against single references, via rouge_score."
_CITATION = "Lin, Chin-Yew. ROUGE: a Package for Automatic Evaluation of Summaries. 2004."
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of predicted texts.
    references: list of reference texts, one per prediction.
    rouge_types: which scores to return (default rouge1, rouge2, rougeL, rougeLsum).
    use_stemmer: Porter-stem words before matching (default True).
    use_aggregator: return the mean over examples (True) or per-example lists (False).
Returns:
    dict from rouge type to an F1 float (or a list of floats when use_aggregator=False).
"""

DEFAULT_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Rouge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, rouge_types=None, use_stemmer=True, use_aggregator=True):
        rouge_types = list(rouge_types or DEFAULT_TYPES)
        scorer = rouge_scorer.RougeScorer(rouge_types=rouge_types, use_stemmer=use_stemmer)
        per_example = {key: [] for key in rouge_types}
        for prediction, reference in zip(predictions, references, strict=True):
            scores = scorer.score(reference, prediction)  # rouge_score takes (target, prediction)
            for key in rouge_types:
                per_example[key].append(scores[key].fmeasure)
        if not use_aggregator:
            return per_example
        return {key: (sum(vals) / len(vals) if vals else 0.0) for key, vals in per_example.items()}
