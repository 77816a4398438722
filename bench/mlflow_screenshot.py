"""Screenshot of the MLflow UI's runs chart view, as a user opens it (issue #15's check).

    python -m bench.mlflow_screenshot [--backend-store-uri sqlite:///mlflow.db]
        [--experiment pgg-summarization] [--out docs/mlflow-charts.png]

Starts a real `mlflow server` on the given store (read only: nothing is logged), looks the experiment
up through the REST API, and points headless Chromium (Debian's `chromium` package) at two pages: the
experiment as it opens (to see which view MLflow picks) and its runs in chart mode. Writes both PNGs
and prints the run and metric-history counts they show.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path

from tests.services import free_port, http_json, wait_for_http


def _screenshot(browser: str, url: str, out: Path, size: str) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                f"--user-data-dir={profile}",
                f"--window-size={size}",
                "--virtual-time-budget=120000",  # the UI is a single-page app: let it fetch and draw
                f"--screenshot={out}",
                url,
            ],
            check=True,
            capture_output=True,
            timeout=180,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend-store-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--experiment", default="pgg-summarization")
    parser.add_argument("--out", type=Path, default=Path("docs/mlflow-charts.png"))
    parser.add_argument("--size", default="1600,1000")
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("no headless browser: install Debian's chromium package (apt-get install chromium)")

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    mlflow = Path(sys.executable).with_name("mlflow")
    with tempfile.TemporaryDirectory() as artifacts:
        log = Path(artifacts) / "server.log"
        server = subprocess.Popen(
            [
                str(mlflow),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
                "--backend-store-uri",
                args.backend_store_uri,
                "--artifacts-destination",
                artifacts,
            ],
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_http(f"{base}/health", server, log, timeout=120)
            api = f"{base}/api/2.0/mlflow"
            name = urllib.parse.quote(args.experiment)
            experiment = http_json(f"{api}/experiments/get-by-name?experiment_name={name}")["experiment"]
            tags = {t["key"]: t["value"] for t in experiment.get("tags", [])}
            runs = http_json(f"{api}/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
            for run in runs:
                history = http_json(
                    f"{api}/metrics/get-history?run_id={run['info']['run_id']}&metric_key=train/policy_loss"
                )
                method = {t["key"]: t["value"] for t in run["data"].get("tags", [])}.get("method", "?")
                print(
                    f"run {run['info']['run_name']} ({method}): "
                    f"{len(history.get('metrics', []))} train/policy_loss points"
                )
            print(
                f"experiment {args.experiment}: {len(runs)} runs, "
                f"mlflow.experimentKind={tags.get('mlflow.experimentKind')}"
            )

            args.out.parent.mkdir(parents=True, exist_ok=True)
            landing = args.out.with_name(args.out.stem + "-landing.png")
            default_view = args.out.with_name(args.out.stem + "-training.png")
            experiment_id = experiment["experiment_id"]
            # MLflow 3.17 ignores the experiment-kind tag: the page follows the UI's global GenAI /
            # Model training switch (GenAI in a fresh browser), which ?workflowType= sets.
            page = f"{base}/#/experiments/{experiment_id}"
            _screenshot(browser, page, landing, args.size)
            _screenshot(browser, f"{page}?workflowType=machine_learning", default_view, args.size)
            _screenshot(
                browser,
                f"{page}/runs?workflowType=machine_learning&compareRunsMode=CHART",
                args.out,
                args.size,
            )
            print(f"wrote {landing}, {default_view} and {args.out}")
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
