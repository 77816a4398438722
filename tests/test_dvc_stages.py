"""Which DVC stages a parameter change makes stale, read through DVC's own parser of dvc.yaml."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.stage_code import STAGE_ENTRIES, stage_files
from tests.conftest import PROJECT_ROOT


@pytest.fixture(scope="module")
def stages(tmp_path_factory) -> dict[str, tuple[list[str], list[str]]]:
    """Stage name -> (params it lists, paths of its other deps relative to the repo), as DVC reads them."""
    repo = tmp_path_factory.mktemp("dvc-repo")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(PROJECT_ROOT / name, repo)
    dvc = Path(sys.executable).parent / "dvc"
    subprocess.run([dvc, "init", "-q", "--no-scm"], cwd=repo, check=True)
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        return {
            stage.addressing.rsplit(":", 1)[-1]: (
                [key for dep in stage.deps for key in (getattr(dep, "params", None) or [])],
                [dep.def_path for dep in stage.deps if not getattr(dep, "params", None)],
            )
            for stage in dvc_repo.index.stages
        }


@pytest.fixture(scope="module")
def stage_params(stages) -> dict[str, list[str]]:
    return {name: params for name, (params, _) in stages.items()}


def test_every_stage_depends_on_the_code_it_runs(stages):
    """Editing any module in a stage's import closure makes DVC see the stage as changed."""
    assert set(STAGE_ENTRIES) == {name.split("@")[0] for name in stages}
    for name, (_, paths) in stages.items():
        missing = [
            f
            for f in stage_files(name)
            if not any(f == p or f.startswith(p.rstrip("/") + "/") for p in paths)
        ]
        assert not missing, (
            f"{name} runs {missing} but dvc.yaml does not list them: python -m flows.stage_code --write"
        )


def test_the_closure_follows_imports(tmp_path):
    files = stage_files("align_pgg")
    assert {"components/aggregation.py", "components/ranking_losses.py", "components/policy_losses.py",
            "components/preferences.py", "components/reference_rewards.py"} <= set(files)  # fmt: skip
    assert "components/prompt_trainer.py" not in files  # the prompt task's code leaves it cached
    assert "components/reference_rewards.py" not in stage_files("prompt_pgg")


def test_editing_an_imported_component_makes_the_stage_stale(tmp_path, data_root):
    """Through DVC itself: record align_pgg as run (dvc commit), edit a module it only reaches through
    imports, and `dvc status` names the stage and the file."""
    repo = tmp_path / "repo"
    for folder in ("components", "flows"):
        shutil.copytree(PROJECT_ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT_ROOT / "dvc.yaml", repo)
    text = (PROJECT_ROOT / "params.yaml").read_text().replace("root: ../shared/data", f"root: {data_root}")
    (repo / "params.yaml").write_text(text)
    (repo / "runs/summarization/warmstart").mkdir(parents=True)
    (repo / "runs/summarization/warmstart/state.json").write_text("{}")
    (repo / "runs/summarization/pgg").mkdir(parents=True)
    (repo / "runs/summarization/pgg/state.json").write_text("{}")
    dvc = str(Path(sys.executable).parent / "dvc")
    subprocess.run([dvc, "init", "-q", "--no-scm"], cwd=repo, check=True)
    subprocess.run([dvc, "commit", "-f", "-q", "align_pgg"], cwd=repo, check=True, capture_output=True)
    clean = subprocess.run([dvc, "status", "align_pgg"], cwd=repo, capture_output=True, text=True, check=True)
    assert "changed" not in clean.stdout, clean.stdout
    with (repo / "components/aggregation.py").open("a") as module:
        module.write("\n# an edit\n")
    stale = subprocess.run([dvc, "status", "align_pgg"], cwd=repo, capture_output=True, text=True, check=True)
    assert "align_pgg" in stale.stdout and "components/aggregation.py" in stale.stdout, stale.stdout


def stale_after_changing(stage_params: dict[str, list[str]], key: str) -> set[str]:
    """Stages that list ``key`` or a section above it."""
    return {
        stage
        for stage, keys in stage_params.items()
        if any(key == k or key.startswith(k + ".") for k in keys)
    }


def test_a_guidance_param_reruns_only_our_method(stage_params):
    assert stale_after_changing(stage_params, "guidance.summarization.aggregation") == {"align_pgg"}
    # and the prompt evaluations: the policy selection ranks pgg's prompts by the aggregated guidance
    assert stale_after_changing(stage_params, "guidance.prompt.aggregation") == {"prompt_pgg"} | {
        f"evaluate_prompt@{m}" for m in ("none", "manual", "random", "seqpg", "pgg")
    }
    assert stale_after_changing(stage_params, "guidance.prompt.lr") == {"prompt_pgg"}


def test_reward_model_and_pgg_only_params_leave_warm_start_and_baselines_cached(stage_params):
    for key in (
        "models.summarization.reward_backbone_kind",
        "policy.summarization.wmle_weighting",
        "policy.summarization.reinforce_coef",
        "policy.summarization.reinforce_mean",
        "policy.summarization.reinforce_baseline",
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


def test_your_own_prompt_data_reruns_the_prompt_stages_only(stage_params):
    prompt_stages = {"prompt_embed", "prompt_pgg", "prompt_seqpg", "prompt_random"} | {
        f"evaluate_prompt@{m}" for m in ("none", "manual", "random", "seqpg", "pgg")
    }
    for key in ("data.prompt.verbalizers", "data.prompt.template"):  # the task model's classes
        assert stale_after_changing(stage_params, key) == {"prepare"} | prompt_stages, key
    assert stale_after_changing(stage_params, "data.prompt.text_column") == {"prepare", "prompt_embed"}
    assert stale_after_changing(stage_params, "data.summarization.source_column") == {"prepare"}
