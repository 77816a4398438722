import subprocess
import sys

import pytest
import yaml
from pydantic import BaseModel

from flows.config import DEFAULT_PARAMS, Config, ParamsError, check_data_root, load_params
from tests.conftest import PROJECT_ROOT, write_params

BAD_PARAMS = {
    "unknown key": (
        "guidance:\n  summarization:\n    agregation: sum\n",
        "guidance.summarization.agregation",
    ),
    "K below 2": ("sampling:\n  summarization:\n    k: 1\n", "sampling.summarization.k"),
    "negative lr": ("policy:\n  prompt:\n    lr: -0.001\n", "policy.prompt.lr"),
    "prompt length 0": ("sampling:\n  prompt:\n    prompt_length: 0\n", "sampling.prompt.prompt_length"),
    "wrong type": ("loop:\n  prompt:\n    policy_steps: many\n", "loop.prompt.policy_steps"),
    "bad choice": ("guidance:\n  prompt:\n    aggregation: mean\n", "guidance.prompt.aggregation"),
    "refit after end": (
        "loop:\n  summarization:\n    policy_steps: 10\n    refit_every: 5\n    refit_until: 20\n",
        "refit_until",
    ),
    "sampled sub-batch above batch": (
        "policy:\n  summarization:\n    batch_size: 4\n    sampled_articles: 8\n",
        "sampled_articles",
    ),
    "rankings without file": ("guidance:\n  summarization:\n    preference: rankings\n", "rankings_file"),
    "unknown section": ("trainer:\n  lr: 1\n", "trainer"),
    "own summaries without columns": ("data:\n  summarization:\n    dataset: mine.jsonl\n", "source_column"),
    "bbc with columns": ("data:\n  summarization:\n    source_column: text\n", "bbc is a preset"),
    "own prompt data without verbalizers": ("data:\n  prompt:\n    dataset: mine\n", "verbalizers"),
    "own prompt data without a manual prompt": (
        "data:\n  prompt:\n    dataset: mine\n    verbalizers: [bad, good]\n",
        "eval.prompt.manual_prompts has no prompt for data.prompt.dataset 'mine'",
    ),
    "a folder as the prompt dataset's name": (
        "data:\n  prompt:\n    dataset: /tmp/mine\n",
        "data.prompt.path",
    ),
    "a preset with an unpublished seed": ("data:\n  prompt:\n    seed: 7\n", "16-shot seeds 13, 21"),
    "a preset's name for your folder": ("data:\n  prompt:\n    path: /tmp/mine\n", "is a preset"),
    "two-word verbalizer": ("data:\n  prompt:\n    verbalizers: [very good, bad]\n", "one word"),
    "verbalizers for another class count": ("data:\n  prompt:\n    verbalizers: [a, b, c]\n", "2 classes"),
    "cloze without mask": ("data:\n  prompt:\n    template: '{input} {prompt}'\n", "{mask}"),
    "mlm on your data without a template": (
        "data:\n  prompt: {dataset: mine, verbalizers: [bad, good]}\n"
        "models:\n  prompt: {task_model: mlm}\neval:\n  prompt: {manual_prompts: {mine: It was}}\n",
        "data.prompt.template",
    ),
    "trainable layers of a frozen backbone": (
        "guidance:\n  prompt:\n    freeze_backbone: true\n    trainable_layers: 2\n",
        "trainable_layers",
    ),
    "window of no blocks": ("guidance:\n  prompt:\n    window_blocks: 0\n", "guidance.prompt.window_blocks"),
    "reward-to-go of a sequence credit": (
        "policy:\n  prompt:\n    reward_to_go: true\n    guidance_credit: sequence\n",
        "reward_to_go applies to token credit only",
    ),
    "gap-spread credit on raw rewards": (
        "policy:\n  prompt:\n    normalize_rewards: false\n    guidance_credit: gap_spread\n",
        "set normalize_rewards: true",
    ),
    "gap-spread credit with guidance-only updates": (
        "policy:\n  prompt:\n    guidance_updates: 4\n    guidance_credit: gap_spread\n",
        "set guidance_updates: 0",
    ),
}


def test_default_params_validate():
    config = load_params(DEFAULT_PARAMS)
    assert config.data.root.is_dir()
    assert config.sampling.summarization.k >= 2
    assert config.loop.summarization.iterations == 2
    assert config.guidance.prompt.aggregation == "sum" and config.guidance.summarization.aggregation == "avg"


def test_sections_carry_no_defaults_so_params_yaml_is_the_only_source():
    def defaults(model):
        for name, field in model.model_fields.items():
            assert field.is_required(), (
                f"{model.__name__}.{name} has a default in code; put it in params.yaml"
            )
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                defaults(annotation)

    defaults(Config)


def test_a_missing_key_names_it(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((PROJECT_ROOT / "params.yaml").read_text().replace("    lead_k: 6\n", ""))
    with pytest.raises(ParamsError, match="eval.summarization.lead_k: required key is missing"):
        load_params(path, base=None)  # alone, not laid over params.yaml (which has it)


def test_a_typo_names_the_file_and_its_closest_key(tmp_path):
    """A copied file with a typo: the typo is the error, not the real key it leaves missing."""
    path = tmp_path / "params.yaml"
    path.write_text(
        (PROJECT_ROOT / "params.yaml").read_text().replace("entropy_coef: 0.0", "entropy_coeff: 0.0")
    )
    for base in (None, DEFAULT_PARAMS):
        with pytest.raises(ParamsError) as err:
            load_params(path, base=base)
        assert str(err.value) == (
            f"{path}: policy.summarization.entropy_coeff: unknown key; did you mean entropy_coef?"
        )


def test_a_partial_overlay_outside_the_repo_resolves_paths_against_the_project_root(tmp_path):
    overlay = tmp_path / "elsewhere" / "mine.yaml"
    overlay.parent.mkdir()
    overlay.write_text(
        "runtime:\n  runs_dir: my-runs\n  seed: 3\nguidance_fit:\n  data: prefs/mine.jsonl\n"
        "  output_dir: my-runs/model\n"
    )
    config, default = load_params(overlay), load_params(DEFAULT_PARAMS)
    assert config.runtime.seed == 3 and config.runtime.runs_dir == PROJECT_ROOT / "my-runs"
    assert config.guidance_fit.data == str(PROJECT_ROOT / "prefs" / "mine.jsonl")
    assert config.guidance_fit.output_dir == PROJECT_ROOT / "my-runs" / "model"
    assert config.data.root == PROJECT_ROOT / "corpora" == default.data.root  # not beside the overlay
    assert config.data.prepared_dir == PROJECT_ROOT / "data"
    changed = {k for k, v in config.flat().items() if default.flat()[k] != v}
    assert changed == {"runtime.runs_dir", "runtime.seed", "guidance_fit.data", "guidance_fit.output_dir"}


def test_an_override_error_names_the_override_and_a_file_error_the_file(tmp_path):
    overlay = tmp_path / "mine.yaml"
    overlay.write_text("sampling:\n  prompt:\n    k: 1\n")
    with pytest.raises(ParamsError, match=rf"^{overlay}: sampling.prompt.k: "):
        load_params(overlay)
    with pytest.raises(ParamsError, match=r"^-S sampling.prompt.k: "):
        load_params(overlay, {"sampling.prompt.k": 0})
    with pytest.raises(
        ParamsError, match=r"^-S guidance.prompt.agregation: unknown key; did you mean aggregation\?$"
    ):
        load_params(DEFAULT_PARAMS, {"guidance.prompt.agregation": "sum"})
    # a check across keys names the section
    with pytest.raises(ParamsError, match="^-S policy.summarization: sampled_articles"):
        load_params(DEFAULT_PARAMS, {"policy.summarization.sampled_articles": 64})


@pytest.mark.parametrize("case", sorted(BAD_PARAMS))
def test_bad_params_name_the_key(tmp_path, data_root, case):
    text, key = BAD_PARAMS[case]
    path = write_params(tmp_path, f"data:\n  root: {data_root}\n" + text)
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert key in str(err.value)
    assert "\n" not in str(err.value)


def test_a_missing_data_root_stops_only_what_reads_it(tmp_path):
    config = load_params(write_params(tmp_path, "data:\n  root: no/such/folder\n"))  # guidance-fit runs
    assert config.data.root == PROJECT_ROOT / "no/such/folder"
    with pytest.raises(
        ParamsError, match=r"^data.root: folder .*no/such/folder does not exist; run `make corpora`"
    ):
        check_data_root(config)


def test_your_own_prompt_dataset_takes_any_integer_seed(data_root, tmp_path):
    own = {"data.prompt.dataset": "mine", "data.prompt.verbalizers": ["bad", "good"]}
    own["eval.prompt.manual_prompts"] = {"mine": "It was"}
    path = write_params(tmp_path, f"data:\n  root: {data_root}\n")
    assert load_params(path, {**own, "data.prompt.seed": 7}).data.prompt.seed == 7


def test_overrides_are_validated(data_root, tmp_path):
    path = write_params(tmp_path, f"data:\n  root: {data_root}\n")
    assert load_params(path, {"sampling.prompt.k": 7}).sampling.prompt.k == 7
    with pytest.raises(ParamsError, match="sampling.prompt.k"):
        load_params(path, {"sampling.prompt.k": 0})


def test_cli_exits_2_with_one_line_before_any_compute(tmp_path, data_root):
    path = write_params(
        tmp_path,
        f"data:\n  root: {data_root}\n  prepared_dir: {tmp_path}/out\nsampling:\n  summarization:\n    k: 1\n",
    )
    result = subprocess.run(
        [sys.executable, "-m", "flows", "prepare", "--params", str(path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "sampling.summarization.k" in result.stderr
    assert not (tmp_path / "out").exists()  # nothing was written


def test_the_paper_profile_is_an_overlay_of_only_the_keys_that_differ():
    path = PROJECT_ROOT / "params-paper.yaml"
    paper, default = load_params(path).flat(), load_params(DEFAULT_PARAMS).flat()
    overlay = {k for k, _ in _leaves(yaml.safe_load(path.read_text()))}
    assert overlay == {k for k, v in paper.items() if default[k] != v}  # every key it holds changes a value
    assert paper["models.summarization.policy"] == "t5-small" and len(overlay) == 29


def _leaves(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def test_prompt_block_steps_cover_the_warm_up_and_every_policy_step_once():
    config = load_params(
        DEFAULT_PARAMS,
        {"sampling.prompt.warmup_lists": 10, "sampling.prompt.lists_per_step": 4, "sampling.prompt.k": 5,
         "loop.prompt.policy_steps": 7, "loop.prompt.refit_every": 3, "loop.prompt.refit_until": 7},
    )  # fmt: skip
    assert config.loop.prompt.iterations == 3
    assert config.prompt_block_steps(0) == [(0, 20), (0, 20), (0, 10)]  # 10 lists of 5, no update
    blocks = [config.prompt_block_steps(i) for i in range(1, 4)]
    assert [step for block in blocks for step, _ in block] == list(range(1, 8))  # the last block is short
    assert {n for block in blocks for _, n in block} == {20}


def test_prompts_per_step_must_form_lists_or_be_resampled(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(DEFAULT_PARAMS.read_text())
    with pytest.raises(ParamsError, match="not a multiple of k 5.*resampled_lists"):
        load_params(params, {"sampling.prompt.prompts_per_step": 16})
    with pytest.raises(ParamsError, match="pgg_update scored"):
        load_params(params, {"sampling.prompt.prompts_per_step": 16, "guidance.prompt.resampled_lists": 64})
    config = load_params(params, {"sampling.prompt.prompts_per_step": 16, "guidance.prompt.resampled_lists": 64,
                                  "policy.prompt.pgg_update": "learned"})  # fmt: skip
    assert config.prompt_block_steps(1)[0] == (1, 16)
    assert [n for _, n in config.prompt_block_steps(0)] == [16] * 40  # 128 lists of 5 in steps of 16


def test_the_authors_prompt_profile_sets_their_protocol_and_nothing_else():
    overlay = yaml.safe_load((PROJECT_ROOT / "params-authors-prompt.yaml").read_text())
    config = load_params(PROJECT_ROOT / "params-authors-prompt.yaml")
    assert (config.sampling.prompt.step_prompts, config.policy.prompt.guidance_samples) == (16, 64)
    assert config.policy.prompt.pgg_update == "learned" and config.guidance.prompt.resampled_lists == 64
    schedule = config.loop.prompt
    assert (schedule.policy_steps, schedule.refit_every, schedule.refit_until) == (12000, 1000, 6001)
    assert set(overlay) == {"sampling", "guidance", "policy", "loop", "eval"}  # budget and schedule only
    assert config.policy.prompt.lr == load_params(DEFAULT_PARAMS).policy.prompt.lr  # pgg's own lr stays
