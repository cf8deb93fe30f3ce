"""Wiring of descent's steps: configuration, tracking, progress and error handling."""

import logging
import os
import warnings

# Read by MLflow at import: per-artifact progress bars would bury descent's own lines.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# Keras re-traces its train function for every new model of a sweep, as intended; TensorFlow warns each time.
logging.getLogger("tensorflow").setLevel(logging.ERROR)
# MLflow's per-model INFO lines ("Validating input example ...") would bury the one line per variant.
logging.getLogger("mlflow").setLevel(logging.WARNING)
for noise in (
    "The specified dataset source can be interpreted in multiple ways",
    "Hint: Inferred schema contains integer column",
    ".*noload",
):
    warnings.filterwarnings("ignore", message=noise)
