"""The servable model, logged as MLflow "models from code": raw feature rows (or array samples) in, predictions out."""

from __future__ import annotations

import joblib
import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


class DescentModel(PythonModel):
    """The training-rows preprocessor followed by the Keras network."""

    def load_context(self, context) -> None:  # noqa: ANN001 - MLflow's PythonModelContext
        import contextlib
        import importlib

        import keras

        # The user's builder file, logged as the model's code: importing it registers its custom layers, if any.
        # (One that imports files of its own that were not logged is skipped: Keras names what it then misses.)
        for module in (context.model_config or {}).get("imports", []):
            with contextlib.suppress(ImportError):
                importlib.import_module(module)
        self.preprocessor = joblib.load(context.artifacts["preprocessor"])
        self.network = keras.saving.load_model(context.artifacts["network"], compile=False)

    # model_input: raw rows, or for array data a numpy array of samples (its tensor signature). The hint says
    # DataFrame all the same: MLflow takes that hint as "no schema of its own", warns on a union, and on none.
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:  # noqa: ANN001
        rows = model_input if isinstance(model_input, np.ndarray) else pd.DataFrame(model_input)
        outputs = self.network.predict(self.preprocessor.transform(rows), verbose=0)
        return pd.DataFrame({"prediction": self.preprocessor.decode(outputs)})


mlflow.models.set_model(DescentModel())
