"""The code a DVC stage runs: the import closure of its entry module inside components/ and flows/.

One closure serves every reuse key, so they cannot disagree: dvc.yaml's code deps (written from it),
the resume fingerprints of the loops and the Prefect task caches (``code_hash``), and the records of
what made an upstream output (flows/provenance.py).

``python -m flows.stage_code`` prints each stage's list; ``python -m flows.stage_code --write`` puts
them into dvc.yaml (tests/test_dvc_stages.py fails while a stage misses a file it runs).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("components", "flows")
# What every `python -m flows STAGE` process imports before it reaches the stage's flow module.
CLI = ("flows.__main__", "flows.tracking", "flows.checkpoints")
# Stage name (before "@" of a foreach stage) -> the module holding its flow.
STAGE_ENTRIES = {
    "prepare": "flows.prepare",
    "summarize_warmstart": "flows.summarization",
    "align_pgg": "flows.summarization",
    "align_mle": "flows.summarization",
    "align_seqpg": "flows.summarization",
    "evaluate_summarization": "flows.summarization",
    "prompt_embed": "flows.prompt",
    "prompt_pgg": "flows.prompt",
    "prompt_seqpg": "flows.prompt",
    "prompt_random": "flows.prompt",
    "evaluate_prompt": "flows.prompt",
    "guidance_fit": "flows.guidance_fit",
    "synthetic_preferences": "flows.synthetic_preferences",
}
# Stages whose command runs their module directly (python -m MODULE), not through the CLI.
OWN_COMMAND = {"synthetic_preferences"}
# Modules whose function-level imports load another stage's code (the CLI's dispatch, the config's
# builders of component configs): only their module-level imports count.
DISPATCHERS = {"flows.__main__", "flows.config"}
# Files a module reads as code at run time without importing them.
DATA_CODE = {"components.rouge": ["components/metric_modules/rouge/rouge.py"]}


def module_file(module: str) -> Path | None:
    base = PROJECT_ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported(module: str) -> set[str]:
    """Project modules ``module`` imports anywhere in its file (lazy imports inside functions too,
    except in DISPATCHERS)."""
    path = module_file(module)
    if path is None:  # not a project file (a script's __main__, an installed package)
        return set()
    return set(_imported_by_text(module, path.read_text()))


@functools.cache
def _imported_by_text(module: str, text: str) -> tuple[str, ...]:
    """Parsing is most of a closure's cost: cached per file content (task cache keys compute closures)."""
    tree = ast.parse(text)
    nodes = tree.body if module in DISPATCHERS else ast.walk(tree)
    found = set()
    for node in nodes:
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name.split(".")[0] in PACKAGES and module_file(name) is not None:
                found.add(name)
    return tuple(sorted(found))


def closure(*modules: str) -> set[str]:
    seen, todo = set(), list(modules)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # a package's __init__ runs first
        todo += sorted(_imported(module))
    return seen


def module_files(*modules: str) -> list[str]:
    """Paths (relative to the project) of every code file ``modules`` run, with what they import."""
    modules = closure(*modules)
    files = {str(module_file(m).relative_to(PROJECT_ROOT)) for m in modules if module_file(m) is not None}
    for module in modules:
        files.update(DATA_CODE.get(module, []))
    return sorted(files)


def stage_files(stage: str) -> list[str]:
    """Paths (relative to the project) of every code file ``stage`` runs."""
    name = stage.split("@")[0]
    return module_files(STAGE_ENTRIES[name], *(() if name in OWN_COMMAND else CLI))


def files_hash(files: list[str]) -> str:
    """sha256 of the files' contents in path order, each under its project-relative path: the same in
    every clone and checkout (no absolute paths, no timestamps); a comment-only edit changes it too."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0")
        digest.update(PROJECT_ROOT.joinpath(name).read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def code_hash(stage: str) -> str:
    """The content of the code ``stage`` runs: exactly the files dvc.yaml lists as its code deps."""
    return files_hash(stage_files(stage))


def task_code_hash(module: str) -> str:
    """The content of the code a task defined in ``module`` runs, as a stage process loads it (the CLI
    too): an edit DVC sees in a stage's deps is a miss for that stage's task caches."""
    return files_hash(module_files(module, *CLI))


def rewrite_dvc_yaml(path: Path = PROJECT_ROOT / "dvc.yaml") -> None:
    """Replace the code deps (components/..., flows/...) of every stage in dvc.yaml with its closure,
    keeping every other line (data deps, comments)."""
    lines, out, stage, in_deps = path.read_text().splitlines(), [], None, False
    for line in lines:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if indent == 2 and stripped.endswith(":") and not stripped.startswith("-"):
            stage = stripped[:-1]
        if stripped == "deps:":
            in_deps = True
            out.append(line)
            if stage in STAGE_ENTRIES:
                out += [f"{' ' * (indent + 2)}- {file}" for file in stage_files(stage)]
            continue
        if in_deps and stripped.startswith("- "):
            if stripped[2:].startswith(PACKAGES) and stage in STAGE_ENTRIES:
                continue  # replaced above
            out.append(line)
            continue
        in_deps = False
        out.append(line)
    path.write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        rewrite_dvc_yaml()
        sys.exit(0)
    for name in sys.argv[1:] or STAGE_ENTRIES:
        print(f"{name}:")
        print("\n".join(f"  - {path}" for path in stage_files(name)))
