"""The tuning part of RESULTS.md: the grid-tuned default sweep against the untuned one, measured in the same run."""

from __future__ import annotations

from collections.abc import Callable


def tuning_targets(r: dict, verdict: Callable[[bool], str]) -> list[str]:
    """The cost target: a five-learning-rate grid (successive halving) at most 3x the untuned sweep's wall time."""
    untuned, tuned = r["descent_2_workers"], r["descent_tuned"]
    ratio = tuned["seconds"] / untuned["seconds"]
    return [
        f"| default sweep tuned by `grid` (5 learning rates per variant) <= 3x the untuned sweep's wall time | "
        f"{ratio:.2f}x ({tuned['seconds']:.0f} s vs {untuned['seconds']:.0f} s) | {verdict(ratio <= 3)} |"
    ]


def tuning_section(r: dict) -> list[str]:
    """Chosen learning rates, statuses and ranks, untuned against tuned, per variant."""
    untuned = {row["variant"]: (i, row) for i, row in enumerate(r["descent_2_workers"]["comparison"], start=1)}
    tuned = {row["variant"]: (i, row) for i, row in enumerate(r["descent_tuned"]["comparison"], start=1)}
    trials = sum(row["trials"] for _, row in tuned.values())
    tuning = sum(row["tuning_seconds"] for _, row in tuned.values())
    lines = [
        "## Tuning: every variant at its own learning rate (`tuning.method: grid`) against the configured rates",
        "",
        f"Both sweeps on two workers in the same run; the tuned one tried {trials:.0f} learning rates in all "
        f"({tuning:.0f} s of trial work summed over the variants). Rank = place in the sweep's comparison "
        "(final validation accuracy, collapsed and diverged variants last).",
        "",
        "| variant | untuned: learning rate | val accuracy | status | rank | tuned: learning rate | val accuracy "
        "| status | rank | trials |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in sorted(tuned, key=lambda n: tuned[n][0]):
        (ra, a), (rb, b) = untuned.get(name, (0, {})), tuned[name]
        lines.append(
            f"| {name} | {a.get('learning_rate', float('nan')):.3g} | {a.get('final_val_accuracy', float('nan')):.4f} "
            f"| {a.get('status', '')} | {ra} | {b['learning_rate']:.3g} | {b['final_val_accuracy']:.4f} "
            f"| {b['status']} | {rb} | {b['trials']:.0f} |"
        )
    return lines
