"""The user's own network (model.builder): a function in a file or a module, or a saved .keras model.

A builder function is called as function(input_shape, n_outputs, task) and returns an uncompiled
keras.Model, Sequential or functional; descent compiles it once per variant. A saved model gives its
architecture, freshly initialised for each seed (or its saved weights, with keep_weights). Every
network is checked against the data before training: one input of the samples' shape, one output
of one unit per class (probabilities) or one unit for regression.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import keras
import numpy as np

from components.errors import InputError

SAVED_FORMATS = (".keras",)
_FILES: dict[tuple[str, int], ModuleType] = {}  # builder files run once per process (and again when edited)


def user_network(
    spec: str, input_shape: tuple[int, ...], n_outputs: int, task: str, seed: int, keep_weights: bool = False
) -> keras.Model:
    """The network `spec` names, its weights drawn from `seed` (the same seed, the same weights), checked."""
    saved = is_saved_model(spec)
    if keep_weights and not saved:
        raise InputError(
            f"model.keep_weights=true needs a saved model, not the builder function {spec}: "
            "give model.builder=path/to/model.keras or remove model.keep_weights"
        )
    keras.utils.set_random_seed(seed)
    if saved:
        model = _saved_network(Path(spec), keep_weights)
    else:
        function = load_builder(spec)
        try:
            model = function(tuple(input_shape), n_outputs, task)
        except Exception as exc:  # the user's code: any error is theirs to fix
            raise InputError(
                f"model.builder {spec} raised {type(exc).__name__}: {_first_line(exc)}: fix the builder "
                f"(descent calls it as {spec.rpartition(':')[2]}({tuple(input_shape)}, {n_outputs}, {task!r}))"
            ) from None
    check_network(model, spec, tuple(input_shape), n_outputs, task)
    return model


def is_saved_model(spec: str) -> bool:
    return Path(spec).suffix.lower() in SAVED_FORMATS


def check_builder(spec: str, keep_weights: bool = False) -> None:
    """What can be checked before the data is loaded: the file, the module, the function exist."""
    if is_saved_model(spec):
        if not Path(spec).is_file():
            raise InputError(f"model.builder file not found: {spec}: give the path of a model saved with model.save()")
    elif keep_weights:
        raise InputError(f"model.keep_weights=true needs model.builder=path/to/model.keras, not {spec}")
    else:
        load_builder(spec)


def load_builder(spec: str) -> Callable[..., keras.Model]:
    """The function of `path/to/file.py:function` or `package.module:function`."""
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise InputError(
            f"model.builder={spec!r} is not path/to/file.py:function, package.module:function or "
            "path/to/model.keras: name the function after a colon"
        )
    module = _file_module(Path(where)) if where.endswith(".py") or "/" in where else _import(where, spec)
    function = getattr(module, name, None)
    if not callable(function):
        names = [k for k, v in vars(module).items() if callable(v) and getattr(v, "__module__", "") == module.__name__]
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise InputError(
            f"{where} has no function {name!r} for model.builder: {hint}its functions are {', '.join(names) or 'none'}"
        )
    return function


def builder_source(spec: str) -> Path | None:
    """The file that defines the network (to log with the run's code), or None for an installed package's."""
    if is_saved_model(spec):
        return Path(spec).resolve()
    where = spec.rpartition(":")[0]
    if where.endswith(".py") or "/" in where:
        return Path(where).resolve()
    origin = getattr(importlib.util.find_spec(where), "origin", None)
    return Path(origin) if origin and Path(origin).resolve().is_relative_to(Path.cwd()) else None


def check_network(model: object, spec: str, input_shape: tuple[int, ...], n_outputs: int, task: str) -> None:
    """One input of the samples' shape, one output that fits the task: else a one-line InputError."""
    if not isinstance(model, keras.Model):
        raise InputError(
            f"model.builder {spec} returned {type(model).__name__}, not a keras.Model: "
            "return keras.Model(inputs, outputs) or keras.Sequential([...]), uncompiled"
        )
    if not model.built:  # a Sequential without keras.Input: build it for the data's samples
        try:
            model.build((None, *input_shape))
        except Exception as exc:
            raise InputError(
                f"model.builder {spec} cannot be built for samples of shape {input_shape}: {_first_line(exc)}: "
                "start it with keras.Input(shape=input_shape)"
            ) from None
    try:
        inputs, outputs = model.inputs, model.outputs
    except AttributeError:
        inputs = outputs = None
    if not inputs or not outputs:
        raise InputError(
            f"model.builder {spec} is a subclassed keras.Model: descent needs a Sequential or functional one "
            "(keras.Input, layers, keras.Model(inputs, outputs))"
        )
    if len(inputs) != 1 or len(outputs) != 1:
        raise InputError(
            f"model.builder {spec} has {len(inputs)} inputs and {len(outputs)} outputs: "
            "descent feeds one array of samples and reads one output: give it one of each"
        )
    takes = tuple(inputs[0].shape)[1:]
    if len(takes) != len(input_shape) or any(t not in (None, s) for t, s in zip(takes, input_shape, strict=False)):
        raise InputError(
            f"model.builder {spec} takes samples of shape {takes} but the data's samples have shape {input_shape}: "
            "build its input as keras.Input(shape=input_shape) from the argument descent passes"
        )
    _check_output(model, spec, input_shape, n_outputs, task)


def network_summary(model: keras.Model) -> str:
    """Keras' summary as text: layers, output shapes, parameter counts."""
    lines: list[str] = []
    model.summary(print_fn=lambda text, **_: lines.append(text))
    return "\n".join(lines).rstrip() + "\n"


def _check_output(model: keras.Model, spec: str, input_shape: tuple[int, ...], n_outputs: int, task: str) -> None:
    gives = tuple(model.outputs[0].shape)[1:]
    if task == "regression" and gives != (1,):
        raise InputError(
            f"model.builder {spec} outputs shape {gives}, but regression needs one value per sample: "
            "end the network with keras.layers.Dense(1)"
        )
    if task == "classification" and gives != (n_outputs,):
        raise InputError(
            f"model.builder {spec} outputs shape {gives}, but the data has {n_outputs} classes: end the network "
            f"with keras.layers.Dense(n_outputs, activation='softmax') (n_outputs = {n_outputs})"
        )
    if task == "classification":
        sample = np.random.default_rng(0).normal(size=(2, *input_shape)).astype("float32")
        sums = np.asarray(model(sample, training=False)).sum(axis=-1)
        if not np.allclose(sums, 1.0, atol=1e-3):
            raise InputError(
                f"model.builder {spec} does not output class probabilities (they sum to {sums[0]:.3g}, not 1): "
                "end the network with activation='softmax': descent's loss reads probabilities"
            )


def _saved_network(path: Path, keep_weights: bool) -> keras.Model:
    if not path.is_file():
        raise InputError(f"model.builder file not found: {path}: give the path of a model saved with model.save()")
    try:
        saved = keras.saving.load_model(path, compile=False)
    except Exception as exc:
        raise InputError(
            f"cannot load {path} as a Keras model: {_first_line(exc)}: save it with model.save('model.keras'), "
            "or give model.builder=path/to/file.py:function (custom layers need one)"
        ) from None
    if keep_weights:
        return saved
    try:
        return keras.models.clone_model(saved)  # the same layers, weights drawn afresh from the seed
    except Exception as exc:
        raise InputError(
            f"cannot make fresh weights for {path}: {_first_line(exc)}: give a builder function instead, "
            "or model.keep_weights=true to start from its saved weights"
        ) from None


def _file_module(path: Path) -> ModuleType:
    if not path.is_file() or path.suffix != ".py":
        raise InputError(
            f"model.builder file not found: {path}: give path/to/file.py:function, relative to {Path.cwd()}"
        )
    key = (str(path.resolve()), path.stat().st_mtime_ns)
    if key not in _FILES:
        name = "descent_builder_" + hashlib.sha256(key[0].encode()).hexdigest()[:12]
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except SyntaxError as exc:
            raise InputError(f"model.builder file {path} line {exc.lineno}: {exc.msg}: fix the syntax there") from None
        except Exception as exc:
            raise InputError(
                f"model.builder file {path} raised {type(exc).__name__} on import: {_first_line(exc)}: fix the file"
            ) from None
        _FILES[key] = module
    return _FILES[key]


def _import(name: str, spec: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise InputError(
            f"cannot import {name} for model.builder={spec}: {_first_line(exc)}: install it, put it on PYTHONPATH "
            "or give path/to/file.py:function"
        ) from None
    except Exception as exc:
        raise InputError(f"module {name} raised {type(exc).__name__} on import: {_first_line(exc)}: fix it") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0][:200] if text else "") or type(exc).__name__
