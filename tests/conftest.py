"""Shared fixtures: the embedded data root, a real Prefect test server, a throwaway MLflow store."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_ROOT = (PROJECT_ROOT.parent / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not DATA_ROOT.is_dir():
        pytest.fail(f"embedded data missing at {DATA_ROOT}: the tests need ../shared/data beside the project")
    return DATA_ROOT


@pytest.fixture(scope="session")
def prefect_server():
    """One real Prefect API (temporary sqlite) for the whole session; yields its URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield PREFECT_API_URL.value()


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture
def one_thread():
    """Tiny models on a shared 2-core box: one torch thread avoids oversubscription stalls."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def merge(base: dict, update: dict) -> dict:
    """``update`` laid over ``base``, section by section (a new dict; lists and values replace)."""
    out = dict(base)
    for key, value in update.items():
        out[key] = (
            merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        )
    return out


def write_params(folder: Path, text: str = "") -> Path:
    """The project's params.yaml with the YAML ``text`` laid over it, as ``folder/params.yaml``.

    Tests start from the real defaults plus their overrides: params.yaml is the only place a default
    lives. ``data.root`` stays the embedded corpora and the outputs stay under ``folder`` unless ``text``
    sets them."""
    base = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    base["data"]["root"] = str(DATA_ROOT)
    # params.yaml's relative outputs resolve against the project root: each test keeps its own in folder
    base["data"]["prepared_dir"] = str(folder / base["data"]["prepared_dir"])
    base["runtime"]["runs_dir"] = str(folder / base["runtime"]["runs_dir"])
    for key in ("data", "output_dir", "report"):
        base["guidance_fit"][key] = str(folder / base["guidance_fit"][key])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(merge(base, yaml.safe_load(text) or {}), sort_keys=False))
    return path


def prepared_params(folder: Path, text: str) -> Path:
    """``write_params`` of the YAML ``text`` whose ``{root}`` and ``{tmp}`` are the embedded data and
    ``folder`` (runs and prepared data go there), with its data prepared."""
    from flows.config import load_params
    from flows.prepare import prepare

    path = write_params(folder, text.format(root=DATA_ROOT, tmp=folder))
    prepare(load_params(path))
    return path


def params_config(overrides: dict | None = None):
    """params.yaml (the project's defaults) with dotted ``overrides``, validated."""
    from flows.config import load_params

    return load_params(write_params(Path(tempfile.mkdtemp(prefix="pgg-params-"))), overrides)


def guidance_config(**fields):
    """The guidance trainer's config from params.yaml's guidance.summarization, with ``fields`` replaced."""
    section = params_config().guidance.summarization
    return dataclasses.replace(
        section.trainer_config(seed=0, max_length=128, max_source_length=512), **fields
    )


def policy_config(method: str = "mle", **fields):
    """The policy trainer's config of ``method`` from params.yaml's policy and sampling sections, with
    ``fields`` replaced. params.yaml samples 8 articles per step; small test batches set their own."""
    config = params_config()
    policy, sampling = config.policy.summarization, config.sampling.summarization
    base = policy.train_config(method, config.loop.summarization.policy_steps, policy.lr, 0, sampling)
    if (
        fields.get("batch_size", base.batch_size) < (base.sampled_articles or 0)
        and "sampled_articles" not in fields
    ):
        fields["sampled_articles"] = None
    return dataclasses.replace(base, **fields)


@contextmanager
def killed_when(monkeypatch, module, name: str, when):
    """The block runs with ``module.name`` raising wherever ``when(*args)`` holds (a crash there); the
    block must fail with it."""
    real = getattr(module, name)

    def crashing(*args, **kwargs):
        if when(*args):
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(module, name, crashing)
        with pytest.raises(RuntimeError, match="killed"):
            yield
