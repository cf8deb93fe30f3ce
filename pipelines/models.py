"""A run's trained network and its servable model: preprocessor + network as one MLflow pyfunc model."""

from __future__ import annotations

import functools
import tempfile
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines import tracking, writer
from pipelines.backend import tracking_uri

SERVING_MODEL = Path(__file__).resolve().parent / "serving_model.py"
COMPONENTS = Path(__file__).resolve().parent.parent / "components"


NETWORK = Path("network/network.keras")


def log_network(network: Any, background: bool = False) -> None:
    """The trained network alone (Keras' own .keras file) as the active run's network/network.keras: ~15 ms, where a
    servable model costs ~0.3 s; the sweep makes its best variant's servable model from it. The file is written
    here and logged (then deleted) by the store, in the writer process when there is one.

    `background` (with a writer process): a thread saves a copy of the network (its weights and compile settings;
    not the optimizer's slots) while the next variant trains; `saved()` waits for it.
    """
    run_id = tracking.active().run_id
    if background and writer.active(tracking_uri()) is not None:
        twin = _twin(network)
        if twin is not None:
            config, weights = network.get_compile_config(), network.get_weights()
            _SAVES.append(_saver().submit(_save_twin, twin, config, weights, run_id))
            return
    _save(network, run_id)


def saved() -> None:
    """Wait until the networks saved in the background are logged; raise the first error one of them met."""
    while _SAVES:
        _SAVES.pop(0).result()


def _save(network: Any, run_id: str) -> None:
    path = Path(tempfile.mkdtemp(prefix="descent-network-")) / NETWORK.name
    network.save(path)
    tracking.store().log_file(run_id, str(path), str(NETWORK.parent), remove=True)


def _save_twin(twin: Any, config: dict | None, weights: list, run_id: str) -> None:
    if config:
        twin.compile_from_config(config)
    twin.set_weights(weights)
    _save(twin, run_id)


def _twin(network: Any) -> Any:
    """A copy of `network` for the saving thread (made once per network), or None when Keras cannot clone it."""
    if network not in _TWINS:
        import keras

        try:
            _TWINS[network] = keras.models.clone_model(network)
        except Exception:  # e.g. a subclassed network without get_config: saved in the foreground
            _TWINS[network] = None
    return _TWINS[network]


@functools.cache
def _saver() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="descent-network")


_TWINS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_SAVES: list[Future] = []


def load_network(run_id: str) -> Any:
    """The network a variant run kept (log_network), loaded; None when it kept none."""
    import keras

    store = tracking.store()
    if str(NETWORK) not in store.artifacts(run_id, str(NETWORK.parent)):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return keras.saving.load_model(store.download(run_id, str(NETWORK), tmp), compile=False)


def log_servable_model(
    preprocessor: Any,
    network: Any,
    example: pd.DataFrame | np.ndarray,
    code: list[Path] = (),
    run_id: str | None = None,
    tag: bool = False,
) -> str | None:
    """Log preprocessor + network as one pyfunc model taking raw rows (or samples, for array data), on the active
    run or on run `run_id` (one that has ended); returns its model URI.

    `code`: files logged with descent's components as the model's code (the user's builder). `tag`: the store sets
    the URI as the run's descent.model_uri, and a writer process logs the model while this one goes on (None).
    """
    import joblib

    folder = tempfile.mkdtemp(prefix="descent-model-")
    network_path = Path(folder) / "network.keras"
    preprocessor_path = Path(folder) / "preprocessor.joblib"
    network.save(network_path)
    joblib.dump(preprocessor, preprocessor_path)
    outputs = pd.DataFrame(
        {"prediction": preprocessor.decode(network(preprocessor.transform(example), training=False).numpy())}
    )
    # No input_example: with one, MLflow reloads the model to predict it, half the cost of logging a model per
    # variant. The signature (from example and outputs) still documents the input; CI serves a model end to end.
    model = {
        "name": "model",
        "python_model": str(SERVING_MODEL),
        "artifacts": {"network": str(network_path), "preprocessor": str(preprocessor_path)},
        "code_paths": [str(COMPONENTS), *map(str, code)],
        "model_config": {"imports": [Path(path).stem for path in code]},  # custom layers register on import
        "example": example,
        "outputs": outputs,
        "pip_requirements": _requirements(),
    }
    run_id = run_id or tracking.active().run_id
    return tracking.store().log_servable_model(run_id, model, tag=tag, remove=folder)


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("mlflow", "tensorflow", "keras", "scikit-learn", "pandas", "joblib")]
