import subprocess
import sys

import pytest
from pydantic import BaseModel

from flows.config import DEFAULT_PARAMS, Config, ParamsError, load_params
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
        load_params(path)


@pytest.mark.parametrize("case", sorted(BAD_PARAMS))
def test_bad_params_name_the_key(tmp_path, data_root, case):
    text, key = BAD_PARAMS[case]
    path = write_params(tmp_path, f"data:\n  root: {data_root}\n" + text)
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert key in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_data_root(tmp_path):
    path = write_params(tmp_path, "data:\n  root: no/such/folder\n")
    with pytest.raises(ParamsError, match="data.root"):
        load_params(path)


def test_overrides_are_validated(data_root, tmp_path):
    path = write_params(tmp_path, f"data:\n  root: {data_root}\n")
    assert load_params(path, {"sampling.prompt.k": 7}).sampling.prompt.k == 7
    with pytest.raises(ParamsError, match="sampling.prompt.k"):
        load_params(path, {"sampling.prompt.k": 0})


def test_cli_exits_2_with_one_line_before_any_compute(tmp_path, data_root):
    path = write_params(
        tmp_path, f"data:\n  root: {data_root}\n  prepared_dir: out\nsampling:\n  summarization:\n    k: 1\n"
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


def test_the_paper_profile_spells_out_every_key():
    paper = load_params(PROJECT_ROOT / "params-paper.yaml")
    assert set(paper.flat()) == set(load_params(DEFAULT_PARAMS).flat())
    assert paper.models.summarization.policy == "t5-small"


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
