"""Wiring of descent's steps: configuration, tracking, progress and error handling."""

import logging
import os
import warnings

from pipelines import terminal

# Before anything imports TensorFlow: its C++ start-up lines go to the log file of a descent process, not the console.
terminal.start()
# Read by MLflow at import: per-artifact progress bars would bury descent's own lines.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# MLflow prints "View run ... at <tracking URI>" for every run, password included if the URI has
# one; descent prints its own (redacted) links instead.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
# TensorFlow's CPU allocator keeps statistics only of large blocks unless it is the BFC allocator; with
# it, each variant's peak training memory is measured on a CPU as it is on a GPU (read before TF starts).
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
# Keras re-traces its train function for every new model of a sweep, as intended; TensorFlow warns each time.
logging.getLogger("tensorflow").setLevel(logging.ERROR)
for noise in (
    "The specified dataset source can be interpreted in multiple ways",
    "Hint: Inferred schema contains integer column",
    ".*noload",
):
    warnings.filterwarnings("ignore", message=noise)
