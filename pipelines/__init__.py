"""Wiring of descent's steps: configuration, tracking, progress and error handling."""

import os
import warnings

# Read by MLflow at import: per-artifact progress bars would bury descent's own lines.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
for noise in (
    "The specified dataset source can be interpreted in multiple ways",
    "Hint: Inferred schema contains integer column",
    ".*noload",
):
    warnings.filterwarnings("ignore", message=noise)
