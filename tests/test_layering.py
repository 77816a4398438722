"""The architecture as a test: math lives in components/, flows/ only wires it together."""

from __future__ import annotations

import ast
import dataclasses
import re

import pytest

from components.guidance_trainer import GuidanceConfig
from components.policy_trainer import PolicyTrainConfig
from components.prompt_trainer import PromptTrainConfig
from tests.conftest import PROJECT_ROOT

# Training steps, tensor reductions and softmax calls: a flow that holds one holds math (the word
# "softmax" alone is the name of an aggregation in the params schema).
FORBIDDEN_IN_FLOWS = (r"\.backward\(", r"optimizer\.step", r"\.sum\(dim", r"\.mean\(dim", r"softmax\(")


@pytest.mark.parametrize("path", sorted((PROJECT_ROOT / "flows").glob("*.py")), ids=lambda p: p.name)
def test_flows_hold_no_math(path):
    code = path.read_text()
    found = [pattern for pattern in FORBIDDEN_IN_FLOWS if re.search(pattern, code)]
    assert not found, f"{path.name} holds {found}: move the math into a components/ module"


@pytest.mark.parametrize("path", sorted((PROJECT_ROOT / "components").glob("*.py")), ids=lambda p: p.name)
def test_components_never_import_the_orchestration(path):
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            assert name.split(".")[0] not in {"prefect", "mlflow", "dvc", "flows"}, (
                f"{path.name} imports {name}"
            )


@pytest.mark.parametrize(
    "config", [GuidanceConfig, PolicyTrainConfig, PromptTrainConfig], ids=lambda c: c.__name__
)
def test_component_configs_carry_no_defaults(config):
    """params.yaml is the only place a default lives: the flows build these through one section method."""
    defaults = [f.name for f in dataclasses.fields(config) if f.default is not dataclasses.MISSING]
    assert not defaults, f"{config.__name__} has defaults for {defaults}"


def test_flow_lint_catches_math(tmp_path):
    sample = "loss.backward()\noptimizer.step()\nx.sum(dim=1)\n"
    assert all(re.search(pattern, sample) for pattern in FORBIDDEN_IN_FLOWS[:3])
