"""Which DVC stages a parameter change makes stale, read through DVC's own parser of dvc.yaml."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT_ROOT


@pytest.fixture(scope="module")
def stage_params(tmp_path_factory) -> dict[str, list[str]]:
    repo = tmp_path_factory.mktemp("dvc-repo")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(PROJECT_ROOT / name, repo)
    dvc = Path(sys.executable).parent / "dvc"
    subprocess.run([dvc, "init", "-q", "--no-scm"], cwd=repo, check=True)
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        return {
            stage.addressing.rsplit(":", 1)[-1]: [
                key for dep in stage.deps for key in (getattr(dep, "params", None) or [])
            ]
            for stage in dvc_repo.index.stages
        }


def stale_after_changing(stage_params: dict[str, list[str]], key: str) -> set[str]:
    """Stages that list ``key`` or a section above it."""
    return {
        stage
        for stage, keys in stage_params.items()
        if any(key == k or key.startswith(k + ".") for k in keys)
    }


def test_a_guidance_param_reruns_only_our_method(stage_params):
    assert stale_after_changing(stage_params, "guidance.summarization.aggregation") == {"align_pgg"}
    assert stale_after_changing(stage_params, "guidance.prompt.aggregation") == {"prompt_pgg"}


def test_reward_model_and_pgg_only_params_leave_warm_start_and_baselines_cached(stage_params):
    for key in (
        "models.summarization.reward_backbone_kind",
        "policy.summarization.wmle_weighting",
        "policy.summarization.reinforce_coef",
        "loop.summarization.refit_until",
    ):
        assert stale_after_changing(stage_params, key) == {"align_pgg"}, key
    assert stale_after_changing(stage_params, "models.summarization.policy") >= {
        "summarize_warmstart", "align_pgg", "align_mle", "align_seqpg"
    }  # fmt: skip


def test_an_evaluation_param_reruns_only_evaluation(stage_params):
    assert stale_after_changing(stage_params, "eval.summarization.lead_k") == {
        f"evaluate_summarization@{m}" for m in ("lead", "warmstart", "pgg", "mle", "seqpg")
    }


def test_the_mle_baseline_ignores_sampling(stage_params):
    assert "align_mle" not in stale_after_changing(stage_params, "sampling.summarization.k")
    assert "align_seqpg" in stale_after_changing(stage_params, "sampling.summarization.k")


def test_every_listed_param_exists_in_params_yaml(stage_params):
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    for stage, keys in stage_params.items():
        for key in keys:
            node = params
            for part in key.split("."):
                assert isinstance(node, dict) and part in node, f"{stage}: {key} is not in params.yaml"
                node = node[part]
