"""The `pgg` command: bad choices, params and inputs exit 2 with one line before anything is started or written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import yaml
from ruamel.yaml import YAML

from flows.__main__ import METHODS, STAGES, dvc_value, parse_overrides, run_command
from flows.config import ParamsError
from tests.conftest import DATA_ROOT, PROJECT_ROOT, merge, write_params


def _pgg(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The console script's entry point exactly as pyproject declares it, in a fresh interpreter."""
    target = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["scripts"]["pgg"]
    module, function = target.split(":")
    code = f"import sys; from {module} import {function}; sys.exit({function}())"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("stage", sorted(METHODS))
def test_a_bad_method_exits_2_and_writes_nothing(tmp_path, stage):
    params = write_params(tmp_path / "project", "runtime:\n  runs_dir: runs\n")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    result = _pgg(stage, "--method", "foo", "--params", str(params), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "invalid choice: 'foo'" in result.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # no runs/.../foo/
    assert not (PROJECT_ROOT / "runs" / "summarization" / "foo").exists()


def test_each_stage_offers_only_its_own_methods(tmp_path):
    params = write_params(tmp_path)
    wrong = _pgg("summarize-align", "--method", "lead", "--params", str(params), cwd=tmp_path)
    assert wrong.returncode == 2 and "invalid choice: 'lead'" in wrong.stderr  # lead is evaluate-only
    missing = _pgg("prompt-train", "--params", str(params), cwd=tmp_path)
    assert missing.returncode == 2 and "--method" in missing.stderr


def test_help_lists_run_and_every_stage(tmp_path):
    result = _pgg("--help", cwd=tmp_path)
    assert result.returncode == 0
    for name in ("run", *STAGES):
        assert name in result.stdout


def test_python_dash_m_flows_still_works(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "flows", "prompt-evaluate", "--method", "bogus"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and result.stderr.startswith("usage: python -m flows")


def test_installed_console_script_runs_from_the_venv(tmp_path):
    script = Path(sys.executable).parent / "pgg"
    if not script.exists():
        pytest.skip(f"{script} not installed yet: pip install -e . in this venv creates it")
    result = subprocess.run(
        [str(script), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "summarize-align" in result.stdout


def _one_line_exit_2(result: subprocess.CompletedProcess, *phrases: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr[-2000:]
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr


def _files(folder: Path) -> list[Path]:
    return sorted(p.relative_to(folder) for p in folder.rglob("*"))


def _overlay(folder: Path, text: str) -> Path:
    """A partial params file (laid over params.yaml): the embedded corpora, and every output under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mine.yaml"
    outputs = (
        f"data:\n  root: {DATA_ROOT}\n  prepared_dir: {folder}/data\nruntime:\n  runs_dir: {folder}/runs\n"
        f"guidance_fit:\n  output_dir: {folder}/model\n  report: {folder}/report.json\n"
    )
    path.write_text(yaml.safe_dump(merge(yaml.safe_load(outputs), yaml.safe_load(text) or {})))
    return path


def test_overrides_are_dotted_keys_with_yaml_values():
    assert parse_overrides(["loop.prompt.policy_steps=20", "data.prompt.verbalizers=[bad, good]",
                            "tracking.mlflow_uri=null", "models.summarization.source_prefix='summarize: '"]) == {
        "loop.prompt.policy_steps": 20, "data.prompt.verbalizers": ["bad", "good"],
        "tracking.mlflow_uri": None, "models.summarization.source_prefix": "summarize: ",
    }  # fmt: skip
    with pytest.raises(ParamsError, match="expected KEY=VALUE"):
        parse_overrides(["loop.prompt.policy_steps"])


@pytest.mark.parametrize(
    ("args", "phrases"),
    [
        (["prepare", "-S", "policy.summarization.entropy_coeff=0.1"],
         ["-S policy.summarization.entropy_coeff: unknown key; did you mean entropy_coef?"]),
        (["prepare", "-S", "sampling.prompt.k=1"], ["-S sampling.prompt.k:"]),
        (["prepare", "-S", "runtime.seed"], ["expected KEY=VALUE"]),
        (["prepare", "-S", "data.root=no/such/folder"], ["data.root: folder", "run `make corpora`"]),
        (["prepare", "-S", "data.prompt.path=/no/such/folder", "-S", "data.prompt.dataset=mine",
          "-S", "data.prompt.verbalizers=[bad, good]", "-S", "eval.prompt.manual_prompts={mine: It was}"],
         ["data.prompt.path: folder /no/such/folder does not exist"]),
        (["summarize-warmstart"], ["holds no prepared splits: run `pgg prepare` first"]),
        (["summarize-align", "--method", "pgg"], ["run `pgg prepare` first"]),
        (["prompt-embed"], ["holds no prepared splits: run `pgg prepare` first"]),
        (["guidance-fit", "-S", "guidance_fit.data=no/such.jsonl"], ["no/such.jsonl does not exist", "guidance_fit.data"]),
    ],
    ids=["typo", "bad value", "no value", "no corpora", "no prompt folder", "before prepare",
         "align before prepare", "prompt before prepare", "no preference file"],
)  # fmt: skip
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, args, phrases):
    overlay = _overlay(tmp_path / "project", "")
    before = _files(tmp_path)
    result = _pgg(*args, "--params", str(overlay), cwd=tmp_path)
    _one_line_exit_2(result, *phrases)
    assert _files(tmp_path) == before
    assert "Prefect" not in result.stderr  # stopped before any server started


@pytest.mark.parametrize(
    ("records", "phrase"),
    [
        ([{"source": "s", "candidates": ["a b", "c d", "e f"], "scores": [1, 1, 1]}] * 6, "every training list is a tie"),
        ([{"prompt": "p", "chosen": "a", "rejected": "b"}], "need at least 2 preference records"),
    ],
    ids=["all ties", "one record"],
)  # fmt: skip
def test_preference_data_that_cannot_fit_is_one_line_naming_the_file(tmp_path, records, phrase):
    data = tmp_path / "prefs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    overlay = _overlay(tmp_path / "project", f"guidance_fit: {{data: {data}, backbone: tiny}}")
    before = _files(tmp_path)
    result = _pgg("guidance-fit", "--params", str(overlay), "-S", "data.root=no/corpora", cwd=tmp_path)
    _one_line_exit_2(result, phrase, f"guidance_fit.data {data}")
    assert _files(tmp_path) == before  # no model folder marked "learned": false


def test_run_help_returns_at_once_without_a_prefect_server(tmp_path):
    started = time.monotonic()
    result = _pgg("run", "--help", cwd=tmp_path)
    assert result.returncode == 0 and "-S KEY=VALUE" in result.stdout and "dvc exp run" in result.stdout
    assert "Prefect server for this run" not in result.stderr
    assert time.monotonic() - started < 30  # an interpreter start; the server alone took 8 s more


def test_run_with_overrides_goes_through_dvc_exp_run(tmp_path):
    overlay = tmp_path / "mine.yaml"
    overlay.write_text(
        "loop:\n  prompt: {policy_steps: 80}\nmodels:\n  summarization: {source_prefix: 'summarize: '}\n"
    )
    assert run_command(["align_pgg"]) == ["dvc", "repro", "align_pgg"]
    copy = tmp_path / "copy.yaml"  # a whole copy changes nothing: plain dvc repro
    copy.write_text((PROJECT_ROOT / "params.yaml").read_text())
    assert run_command(["--params", str(copy), "-f"]) == ["dvc", "repro", "-f"]
    assert run_command(["-S", "guidance.prompt.trainable_layers=null", "-f", "prompt_pgg"]) == [
        "dvc", "exp", "run", "-S", "guidance.prompt.trainable_layers=null", "-f", "prompt_pgg",
    ]  # fmt: skip
    assert run_command(["--params", str(overlay), "-S", "loop.prompt.refit_every=5"]) == [
        "dvc", "exp", "run", "-S", "loop.prompt.policy_steps=80", "-S", 'models.summarization.source_prefix="summarize: "',
        "-S", "loop.prompt.refit_every=5",
    ]  # fmt: skip
    with pytest.raises(SystemExit) as stop:  # validated before dvc or a server starts
        run_command(["-S", "loop.prompt.refit_every=500"])
    assert stop.value.code == 2


def test_dvc_exp_run_reads_each_override_back_as_its_yaml_value(tmp_path):
    """The -S values pgg run hands to dvc exp run land in params.yaml as the YAML values they were."""
    values = {"a.text": "summarize: ", "a.none": None, "a.rate": 5.0e-05, "a.words": ["bad", "good"],
              "a.flag": False, "a.count": 3}  # fmt: skip
    (tmp_path / "params.yaml").write_text(
        "a: {text: x, none: 1, rate: 1.0, words: [x], flag: true, count: 0}\n"
    )
    (tmp_path / "dvc.yaml").write_text("stages:\n  echo:\n    cmd: echo ok\n    params: [a]\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1"}  # fmt: skip
    dvc = str(Path(sys.executable).parent / "dvc")
    for command in (
        ["git", "init", "-q"],
        [dvc, "init", "-q"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "init"],
    ):
        subprocess.run(command, cwd=tmp_path, env=env, check=True, capture_output=True, timeout=120)
    sets = [arg for key, value in values.items() for arg in ("-S", f"{key}={dvc_value(value)}")]
    result = subprocess.run([dvc, "exp", "run", *sets], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    # DVC writes YAML 1.2 (a float may read 5e-05, a string to YAML 1.1; pgg's validation takes both)
    written = YAML(typ="safe").load((tmp_path / "params.yaml").read_text())["a"]
    assert {f"a.{k}": v for k, v in written.items()} == values


def _load_quietly(capfd, code: str) -> None:
    """``code``, which loads a saved reward model, in a fresh interpreter as a user would run it: no
    load-report alarm is printed."""
    capfd.readouterr()
    # a user's shell: importing flows (as this process did) would set TRANSFORMERS_VERBOSITY=error for it
    env = {k: v for k, v in os.environ.items() if k != "TRANSFORMERS_VERBOSITY"}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)  # fds: capfd's
    captured = capfd.readouterr()
    both = captured.out + captured.err
    assert "loaded" in captured.out, both[-3000:]
    for alarm in ("seem corrupted", "MISSING", "UNEXPECTED", "LOAD REPORT"):
        assert alarm not in both, both[-3000:]


def test_guidance_fit_on_your_own_file_runs_without_corpora_and_reloads_silently(
    tmp_path, prefect_server, mlflow_uri, capfd
):
    """No corpora/ (data.root points nowhere); the note about DVC comes first; the saved MiniLM reward
    model loads back, directly and as the registered MLflow pyfunc, without a load-report false alarm."""
    from components.synthetic_preferences import write_synthetic_pairs
    from flows.__main__ import main

    data = write_synthetic_pairs(tmp_path / "prefs.jsonl", n=10)
    overlay = _overlay(
        tmp_path, f"guidance_fit: {{data: {data}, epochs: 1, baseline_epochs: 1, head_hidden: 16}}"
    )
    assert main(["guidance-fit", "--params", str(overlay), "-S", f"data.root={tmp_path}/no-corpora"]) == 0
    err = capfd.readouterr().err
    assert err.splitlines()[0] == (
        "note: pgg guidance-fit bypasses DVC (dvc.lock is not updated); `pgg run guidance_fit` runs it through DVC"
    )
    assert json.loads((tmp_path / "report.json").read_text())["n_train"] == 8
    assert not (tmp_path / "no-corpora").exists()

    model = tmp_path / "model"
    _load_quietly(
        capfd,
        "import mlflow; from components.reward_model import TokenRewardModel\n"
        f"direct = TokenRewardModel.load({str(model)!r}).token_rewards(['a kind answer'])[0]\n"
        f"pyfunc = mlflow.pyfunc.load_model('models:/pgg-token-reward@latest-fit').predict(['a kind answer'])[0]\n"
        "assert pyfunc['rewards'] == [r for _, r in direct], (pyfunc, direct)\nprint('loaded')",
    )


def test_a_reward_model_with_trained_layers_reloads_silently(tmp_path, capfd):
    from components.models import ModelSpec
    from components.reward_model import TokenRewardModel

    _, model = TokenRewardModel.from_spec(
        ModelSpec("minilm", "causal_lm"), head_hidden=16, freeze_backbone=False, trainable_layers=1
    )
    model.save(tmp_path / "model")
    _load_quietly(
        capfd,
        "from components.reward_model import TokenRewardModel\n"
        f"model = TokenRewardModel.load({str(tmp_path / 'model')!r})\n"
        "assert model.trainable_layers == 1 and model.token_rewards(['fine'])[0]\nprint('loaded')",
    )
