"""The sweep grid: every optimizer x batch size as a named variant, in the seed notes' vocabulary."""

from __future__ import annotations

from dataclasses import dataclass

from components.errors import InputError
from components.optimizers import batch_regime

# Words a person may use for the two ends of the batch-size scale.
ALIASES: dict[str, int | str] = {"full": "full", "batch": "full", "stochastic": 1}


@dataclass(frozen=True)
class Variant:
    """One cell of the grid: Variant(optimizer="adam", batch_size=32)."""

    optimizer: str
    batch_size: int | str

    def name(self, n_train: int) -> str:
        return f"{self.optimizer}-{batch_regime(self.batch_size, n_train).label}"


def parse_batch_size(value: int | str) -> int | str:
    """'full'/'batch' -> 'full', 'stochastic' -> 1, '32' -> 32."""
    text = str(value).strip().lower()
    if text in ALIASES:
        return ALIASES[text]
    try:
        return int(text)
    except ValueError:
        raise InputError(
            f"batch size {value!r} is not a number: use full (batch), 1 (stochastic) or a mini-batch size"
        ) from None


def expand_sweep(optimizers: list[str], batch_sizes: list[int | str], n_train: int) -> list[Variant]:
    """Every optimizer x batch size, each checked against the training rows, duplicates once."""
    if not optimizers or not batch_sizes:
        raise InputError("the sweep is empty: give at least one optimizer and one batch size")
    sizes = [parse_batch_size(b) for b in batch_sizes]
    variants: list[Variant] = []
    names: set[str] = set()
    for optimizer in optimizers:
        for size in sizes:
            variant = Variant(optimizer, size)
            name = variant.name(n_train)  # raises for sizes outside 1..n_train
            if name not in names:
                names.add(name)
                variants.append(variant)
    return variants
