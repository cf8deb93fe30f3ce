"""The typed, validated config: conf/default.yaml, an optional file and key=value overrides merged."""

from __future__ import annotations

import difflib
import hashlib
import json
import shlex
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from components.errors import InputError
from components.files import SEPARATORS
from components.sweep import ALIASES

DEFAULT_FILE = Path(__file__).resolve().parent.parent / "conf" / "default.yaml"

Fraction = Annotated[float, Field(ge=0, lt=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class DataConfig(_Strict):
    source: str
    target: str | None
    task: Literal["auto", "classification", "regression"]
    image_size: Annotated[list[Annotated[int, Field(gt=0)]], Field(min_length=2, max_length=2)] | None
    color_mode: Literal["grayscale", "rgb", "rgba"]
    encoding: str | None
    separator: str | None

    @field_validator("separator")
    @classmethod
    def _one_character(cls, value: str | None) -> str | None:
        if value is not None and len(value) != 1 and value not in SEPARATORS:
            raise ValueError(f"use one character or one of {', '.join(SEPARATORS)}")
        return value


class SplitConfig(_Strict):
    validation: Fraction
    test: Fraction
    seed: Annotated[int, Field(ge=0)]
    preprocess_rows: Annotated[int, Field(gt=0)] | None


class ModelConfig(_Strict):
    api: Literal["sequential", "functional"]
    hidden: list[Annotated[int, Field(gt=0)]]
    activation: str
    dropout: Fraction
    builder: str | None
    keep_weights: bool


class TrainingConfig(_Strict):
    optimizer: str
    learning_rate: Annotated[float, Field(gt=0)] | None
    batch_size: Annotated[int, Field(gt=0)] | Literal["full"]
    epochs: Annotated[int, Field(gt=0)]
    seed: Annotated[int, Field(ge=0)]
    verbose: Literal[0, 1, 2]

    @field_validator("batch_size", mode="before")
    @classmethod
    def _seed_words(cls, value: Any) -> Any:
        # The seed notes' words for the two ends: batch (all rows) and stochastic (one row).
        return ALIASES.get(value, value) if isinstance(value, str) else value


class MeasureConfig(_Strict):
    gradients: bool
    noise_method: Literal["auto", "exact", "two_batch"]
    noise_memory_mb: Annotated[float, Field(gt=0)]
    noise_small_batch: Annotated[int, Field(gt=0)]
    noise_draws: Annotated[int, Field(ge=2)]
    probe_rows: Annotated[int, Field(gt=1)]
    sharpness: bool
    sharpness_per_epoch: bool
    sharpness_tolerance: Annotated[float, Field(gt=0, lt=1)]
    sharpness_iterations: Annotated[int, Field(gt=0)]
    sharpness_epsilon: Annotated[float, Field(gt=0)]
    sharpness_steps: Annotated[int, Field(gt=0)]


class TuningConfig(_Strict):
    method: Literal["none", "grid", "range_test", "scaled"]
    grid: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1)]
    extensions: Annotated[int, Field(ge=0)]
    halving_rate: Annotated[int, Field(ge=2)]
    rungs: Annotated[int, Field(ge=1)]
    range_start: Annotated[float, Field(gt=0)]
    range_stop: Annotated[float, Field(gt=0)]
    range_updates: Annotated[int, Field(ge=3)]
    scaling: Literal["linear", "sqrt"]
    reference_batch_size: Annotated[int, Field(gt=0)] | Literal["full"]
    reference: Literal["config", "grid"]

    @field_validator("reference_batch_size", mode="before")
    @classmethod
    def _seed_words(cls, value: Any) -> Any:
        return ALIASES.get(value, value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _range(self) -> TuningConfig:
        if self.range_stop <= self.range_start:
            raise ValueError(f"range_stop {self.range_stop} must be above range_start {self.range_start}")
        return self


class SweepConfig(_Strict):
    optimizers: list[str]
    batch_sizes: list[Annotated[int, Field(gt=0)] | str]
    target: float | None
    target_fraction: Annotated[float, Field(gt=0, le=1)]
    collapse_threshold: Annotated[float, Field(ge=0, lt=1)] | None
    seeds: list[Annotated[int, Field(ge=0)]] | None
    workers: Annotated[int, Field(gt=0)] | Literal["auto"]
    retries: Annotated[int, Field(ge=0)]
    executor: Literal["local", "ray"]
    tolerate_failures: bool


class RayConfig(_Strict):
    address: str | None
    cpus_per_variant: Annotated[float, Field(gt=0)]
    gpus_per_variant: Annotated[float, Field(ge=0)]
    max_retries: Annotated[int, Field(ge=0)]


class TrackingConfig(_Strict):
    system_metrics: bool
    system_metrics_interval: Annotated[float, Field(gt=0)]
    shutdown_timeout: Annotated[float, Field(gt=0)]
    log_models: Literal["best", "all"]
    log_networks: Literal["best", "all"]
    writer: bool


class ScheduleConfig(_Strict):
    on_overlap: Literal["wait", "skip"]
    lock_timeout: Annotated[float, Field(ge=0)]
    stale_after: Annotated[float, Field(gt=0)]
    model_name: Annotated[str, Field(min_length=1)]
    tracking_retries: Annotated[int, Field(ge=1)]
    tracking_backoff: Annotated[float, Field(ge=0)]


class Config(_Strict):
    experiment: Annotated[str, Field(min_length=1)]
    data: DataConfig
    split: SplitConfig
    model: ModelConfig
    training: TrainingConfig
    measure: MeasureConfig
    tuning: TuningConfig
    sweep: SweepConfig
    ray: RayConfig
    schedule: ScheduleConfig
    tracking: TrackingConfig
    optimizers: dict[str, dict[str, float | bool]]

    def digest(self) -> str:
        """A short hash of what shapes the results: equal studies, equal digests (not how they are scheduled)."""
        where = {"schedule": True, "ray": True, "tracking": True, "training": {"verbose"}}
        where["sweep"] = {"workers", "retries", "executor", "tolerate_failures"}
        tree = self.model_dump(exclude=where)
        return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:16]

    def hyperparameters(self, optimizer: str) -> dict[str, float | bool]:
        """The optimizer's hyperparameters with training.learning_rate applied when set."""
        params = dict(self.optimizers.get(optimizer, {}))
        if self.training.learning_rate is not None:
            params["learning_rate"] = self.training.learning_rate
        return params


def load_config(
    path: str | None = None, overrides: str | list[str] | None = None, values: dict[str, Any] | None = None
) -> Config:
    """Merge default.yaml, the file at `path`, `key.sub=value` overrides, then dotted `values`; validate."""
    tree = read_yaml(DEFAULT_FILE)
    if path:
        _merge(tree, read_yaml(Path(path)), prefix="")
    try:
        pairs = shlex.split(overrides) if isinstance(overrides, str) else list(overrides or [])
    except ValueError as exc:
        raise InputError(f"cannot read overrides {overrides!r}: {exc}: quote each value that has spaces") from None
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise InputError(f"override {pair!r} is not key=value: write e.g. training.epochs=5")
        _set(tree, key.strip(), parse_value(raw))
    for key, value in (values or {}).items():
        _set(tree, key, value)
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        raise InputError(_explain(exc)) from None


def read_yaml(path: Path) -> dict:
    """A YAML mapping from a file, with the line of any syntax error."""
    if not path.is_file():
        raise InputError(f"config file not found: {path}: give an existing YAML file (e.g. conf/quick.yaml)")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise InputError(f"malformed YAML in {path}{where}: {problem}: fix the syntax there") from None
    if not isinstance(tree, dict):
        raise InputError(f"config file {path} must hold a mapping of keys, got {type(tree).__name__}")
    return tree


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def parse_value(raw: str) -> Any:
    """A command-line value read as YAML: 5 -> int, 1e-3 -> float, [64,32] -> list, full -> str."""
    for number in (int, float):
        try:
            return number(raw)
        except ValueError:
            pass
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _merge(base: dict, update: dict, prefix: str) -> None:
    for key, value in update.items():
        _check_key(base, key, prefix)
        if isinstance(value, dict) and isinstance(base.get(key), dict) and not _is_open(prefix + key):
            _merge(base[key], value, f"{prefix}{key}.")
        else:
            base[key] = value


def _set(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node, prefix = tree, ""
    for part in parents:
        _check_key(node, part, prefix)
        if not isinstance(node[part], dict):
            raise InputError(f"config key {prefix}{part} is a value, not a section: set {prefix}{part}=... instead")
        node, prefix = node[part], f"{prefix}{part}."
    if not _is_open(prefix.rstrip(".")):
        _check_key(node, leaf, prefix)
    node[leaf] = value


def _is_open(section: str) -> bool:
    # Sections whose keys are names chosen by the user (optimizer names, their hyperparameters).
    return section == "optimizers" or section.startswith("optimizers.")


def _check_key(node: dict, key: str, prefix: str) -> None:
    if key in node or _is_open(prefix.rstrip(".")):
        return
    close = difflib.get_close_matches(key, list(node), n=1)
    hint = f"did you mean {prefix}{close[0]}? " if close else ""
    raise InputError(f"unknown config key {prefix}{key}: {hint}known keys here: {', '.join(prefix + k for k in node)}")


def _explain(exc: ValidationError) -> str:
    first = exc.errors()[0]
    # Union members add their type (e.g. 'constrained-int') to the location; keep only the keys.
    where = ".".join(str(p) for p in first["loc"] if not any(ch in str(p) for ch in "-[]"))
    got = first.get("input")
    return f"config value {where}={got!r} is invalid: {first['msg'].lower()}"
