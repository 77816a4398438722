"""dvc exp show / dvc metrics diff compare against main only if main's metrics are committed with its dvc.lock."""

from __future__ import annotations

import subprocess

import yaml

from tests.conftest import PROJECT_ROOT


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True)


def _uncached_outs_in_dvc_yaml() -> list[str]:
    """Every `cache: false` metrics path of dvc.yaml, resolved by DVC's own parser (foreach, ${...})."""
    from dvc.repo import Repo

    with Repo(str(PROJECT_ROOT)) as repo:
        return sorted(
            str(out.fs_path).removeprefix(str(PROJECT_ROOT) + "/")
            for stage in repo.index.stages
            for out in stage.outs
            if out.metric and not out.use_cache
        )


def test_every_metrics_file_in_dvc_lock_is_tracked_by_git():
    lock = yaml.safe_load((PROJECT_ROOT / "dvc.lock").read_text()) or {}
    uncached = set(_uncached_outs_in_dvc_yaml())
    named = sorted(
        out["path"]
        for stage in lock.get("stages", {}).values()
        for out in stage.get("outs", [])
        if out["path"] in uncached or out["path"].startswith("metrics/")
    )
    tracked = set(_git("ls-files", "--", *named).stdout.split()) if named else set()
    missing = [path for path in named if path not in tracked]
    assert not missing, f"dvc.lock names metrics git does not track: {missing}; git add them with dvc.lock"


def test_metrics_outputs_are_not_git_ignored():
    paths = _uncached_outs_in_dvc_yaml()
    assert any(p.startswith("metrics/summarization/") for p in paths)
    assert any(p.startswith("metrics/prompt/") for p in paths)
    ignored = _git("check-ignore", "--no-index", *paths).stdout.split()
    assert not ignored, f"{ignored} are git-ignored: dvc exp show would have no baseline for them"
