"""Prefect recipes that wire pgg's components into pipelines. No math lives here."""

import os
from pathlib import Path

# Keep Prefect's state inside the project (the default ~/.prefect has produced sqlite lock errors
# under concurrent processes) and stay offline unless the user opts in with HF_HUB_OFFLINE=0.
_ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("PREFECT_HOME", str(_ROOT / ".prefect"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# A loaded 2-core machine can take longer than Prefect's default 20 s to start the temporary server.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
