"""The servable model, logged as MLflow "models from code": raw feature rows in, predictions out."""

from __future__ import annotations

import joblib
import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class DescentModel(PythonModel):
    """The training-rows preprocessor followed by the Keras network."""

    def load_context(self, context) -> None:  # noqa: ANN001 - MLflow's PythonModelContext
        import keras

        self.preprocessor = joblib.load(context.artifacts["preprocessor"])
        self.network = keras.saving.load_model(context.artifacts["network"], compile=False)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:  # noqa: ANN001
        x = self.preprocessor.transform(pd.DataFrame(model_input))
        outputs = self.network.predict(x, verbose=0)
        return pd.DataFrame({"prediction": self.preprocessor.decode(outputs)})


mlflow.models.set_model(DescentModel())
