"""Compare the variants of a sweep: one table row each, plots a person reads, a short summary."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from components.claims import claims_markdown, claims_table
from components.report import markdown_table

# The validation metric that ranks variants, and whether higher is better, by task.
RANKING = {"classification": ("val_accuracy", True), "regression": ("val_mae", False)}


@dataclass
class VariantRecord:
    """What a finished (or failed) variant left behind, read from its run."""

    name: str
    run_id: str
    status: str
    params: dict[str, str]
    history: pd.DataFrame  # one row per epoch: loss, val_loss, metric, epoch_seconds, updates
    final: dict[str, float] = field(default_factory=dict)
    diverged: bool = False
    error: str = ""
    group: str = ""  # the variant without its seed (adam-bs32 for adam-bs32-seed1); the name when empty


def target_value(records: list[VariantRecord], task: str, target: float | None, fraction: float) -> float | None:
    """The validation metric to reach: `target` if given, else `fraction` of the best final value."""
    if target is not None:
        return target
    key, higher = RANKING[task]
    finals = [r.history[key].iloc[-1] for r in _usable(records) if key in r.history]
    finals = [v for v in finals if math.isfinite(v)]
    if not finals:
        return None
    return fraction * max(finals) if higher else min(finals) / fraction


def comparison_table(records: list[VariantRecord], task: str, target: float | None) -> pd.DataFrame:
    """One row per variant, best first (ranked on the final validation metric, never on test)."""
    key, higher = RANKING[task]
    test_key = "test_" + key.removeprefix("val_")
    rows = []
    for r in records:
        h = r.history
        values = h[key] if key in h else pd.Series(dtype=float)
        best_at = (values.idxmax() if higher else values.idxmin()) if values.notna().any() else None
        reached = _first_reach(h, key, higher, target)
        rows.append(
            {
                "variant": r.name,
                "group": r.group or r.name,
                "seed": _int(r.params.get("seed")),
                "optimizer": r.params.get("optimizer"),
                "batch_size": _int(r.params.get("batch_size")),
                "regime": r.params.get("regime"),
                "status": "diverged" if r.diverged else r.status.lower(),
                f"final_{key}": values.iloc[-1] if len(values) else np.nan,
                f"best_{key}": values.loc[best_at] if best_at is not None else np.nan,
                "best_epoch": int(h.loc[best_at, "epoch"]) if best_at is not None else np.nan,
                test_key: r.final.get(test_key, np.nan),
                "train_seconds": r.final.get("train_seconds", np.nan),
                "updates": r.final.get("total_updates", np.nan),
                "epochs_to_target": reached.get("epoch", np.nan),
                "updates_to_target": reached.get("updates", np.nan),
                "seconds_to_target": reached.get("seconds", np.nan),
                "train_peak_memory_mb": r.final.get("train_peak_memory_mb", np.nan),
                "samples_per_second": r.final.get("samples_per_second", np.nan),
                "loss_noise": float(h["loss_noise"].median()) if "loss_noise" in h else np.nan,
                "process_peak_memory_mb": r.final.get("process_peak_memory_mb", np.nan),
                "noise_scale": _last(h, "noise_scale"),
                "diverged": r.diverged,
                "run_id": r.run_id,
            }
        )
    table = pd.DataFrame(rows)
    # Failed, diverged and unvalidated (split.validation=0) variants rank last.
    score = table[f"final_{key}"] * (-1 if higher else 1)
    table["_rank"] = np.where((table["status"] == "finished") & score.notna(), score, np.inf)
    return table.sort_values(["_rank", "train_seconds"]).drop(columns="_rank").reset_index(drop=True)


def summary_markdown(table: pd.DataFrame, task: str, target: float | None, title: str) -> str:
    """A short summary: the best variant, the fastest to the target, the diverged and failed ones."""
    key, higher = RANKING[task]
    finished = table[table["status"] == "finished"]
    lines = [f"# {title}", ""]
    if finished.empty:
        lines.append("No variant finished: see the failed and diverged runs below.")
    else:
        best = finished.iloc[0]
        lines.append(
            f"**Best variant: {best['variant']}** — final {key} {best[f'final_{key}']:.4f} "
            f"({'higher' if higher else 'lower'} is better), test {best[_test(key)]:.4f}, "
            f"{best['train_seconds']:.1f} s, {best['updates']:.0f} updates."
        )
        if target is not None:
            fastest = finished.dropna(subset=["seconds_to_target"]).sort_values("seconds_to_target")
            if fastest.empty:
                lines.append(f"\nNo variant reached the target {key} {target:.4f}.")
            else:
                f = fastest.iloc[0]
                lines.append(
                    f"\n**Fastest to the target** ({key} {target:.4f}): {f['variant']} in "
                    f"{f['seconds_to_target']:.1f} s, {_count(f['epochs_to_target'], 'epoch')}, "
                    f"{_count(f['updates_to_target'], 'update')}."
                )
    if "noise_scale" in table:
        note = noise_scale_note(table)
        if note:
            lines.append(note)
    seeds = seed_table(table, task)
    if seeds is not None:
        lines += [
            "",
            f"**Across seeds** (final {key}, mean and standard deviation per variant): {seed_verdict(seeds, task)}",
        ]
        lines += ["", markdown_table(seeds)]
    elif not finished.empty:
        lines.append(
            "\n**One seed per variant**: a lead smaller than the spread between seeds cannot be told from luck. "
            "Run with `sweep.seeds: [0, 1, 2]` to measure that spread and get a verdict on the best variant."
        )
    claims = claims_table(table, _test(key), higher)
    lines += ["", "**The study notes' claims, measured on this data** (median over each regime's finished variants):"]
    lines += ["", claims_markdown(claims)]
    for status, word in (("diverged", "Diverged (loss became NaN or infinite)"), ("failed", "Failed")):
        names = table.loc[table["status"] == status, "variant"].tolist()
        lines.append(f"\n{word}: {', '.join(names) if names else 'none'}.")
    shown = ["variant", f"final_{key}", _test(key), "train_seconds", "updates", "seconds_to_target", "status"]
    lines += ["", markdown_table(table, shown)]
    return "\n".join(lines) + "\n"


def seed_table(table: pd.DataFrame, task: str) -> pd.DataFrame | None:
    """Mean and spread of the final validation metric per variant over its seeds; None with one seed each."""
    key, higher = RANKING[task]
    finished = table[table["status"] == "finished"]
    if finished.empty or finished.groupby("group")["seed"].nunique().max() < 2:
        return None
    grouped = finished.groupby("group", sort=False)
    out = pd.DataFrame(
        {
            "seeds": grouped["seed"].nunique(),
            f"mean_{key}": grouped[f"final_{key}"].mean(),
            f"sd_{key}": grouped[f"final_{key}"].std(ddof=1).fillna(0.0),
            f"mean_{_test(key)}": grouped[_test(key)].mean(),
            "mean_train_seconds": grouped["train_seconds"].mean(),
        }
    )
    out = out.sort_values(f"mean_{key}", ascending=not higher).reset_index(names="variant")
    return out


def seed_verdict(seeds: pd.DataFrame, task: str) -> str:
    """Whether the best variant's lead over the runner-up is larger than the seed-to-seed spread."""
    key, higher = RANKING[task]
    best = seeds.iloc[0]
    if len(seeds) < 2:
        return f"{best['variant']} is the only variant that finished."
    second = seeds.iloc[1]
    lead = abs(best[f"mean_{key}"] - second[f"mean_{key}"])
    # The spread of the difference between two variants' means: their seed spreads combined.
    spread = math.sqrt(best[f"sd_{key}"] ** 2 / best["seeds"] + second[f"sd_{key}"] ** 2 / second["seeds"])
    scale, unit = (100, "points") if task == "classification" else (1, key.removeprefix("val_"))
    said = f"{best['variant']} leads {second['variant']} by {lead * scale:.2g} ± {spread * scale:.2g} {unit}"
    if lead > 2 * spread and best["seeds"] > 1:
        return f"{said}: a clear winner (the lead is more than twice its spread)."
    return f"No clear winner: {said}, within twice the spread across seeds."


def plot_comparison(records: list[VariantRecord], table: pd.DataFrame, task: str, folder: Path) -> list[Path]:
    """PNG plots: validation loss against epochs, updates and seconds; the test metric per variant; updates to the
    target; and, when measured, sharpness by batch size and the generalization gap against sharpness."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    folder.mkdir(parents=True, exist_ok=True)
    styles = _styles(records)
    paths = []
    for x, label, name, log in (
        ("epoch", "epoch", "val_loss_by_epoch.png", False),
        ("updates", "updates (iterations, log scale)", "val_loss_by_update.png", True),
        ("seconds", "training seconds (log scale)", "val_loss_by_second.png", True),
    ):
        fig, ax = plt.subplots(figsize=(11, 6.5))
        for r in records:
            h = r.history
            if "val_loss" not in h or h.empty:
                continue
            h = h[np.isfinite(h["val_loss"])]  # a diverged variant's inf would squash every other line
            ax.plot(h[x], h["val_loss"], label=r.name, linewidth=1.6, **styles[r.name])
        ax.set_xlabel(label)
        ax.set_ylabel("validation loss (log scale)")
        ax.set_yscale("log")
        if log:
            ax.set_xscale("log")
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"Validation loss against {x}: one line per variant (colour = optimizer, line = batch size)")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, ncol=1 + len(records) // 20)
        paths.append(_save(fig, folder / name))
    key = _test(RANKING[task][0])
    shown = table.dropna(subset=[key])
    fig, ax = plt.subplots(figsize=(11, max(3.0, 0.32 * len(shown) + 1.2)))
    colours = [styles[v]["color"] for v in shown["variant"]]
    ax.barh(shown["variant"], shown[key], color=colours)
    ax.invert_yaxis()
    ax.set_xlabel(key.replace("_", " "))
    ax.set_title(f"{key.replace('_', ' ')} per variant, best validation first")
    for y, value in enumerate(shown[key]):
        ax.text(value, y, f" {value:.3f}", va="center", fontsize=8)
    paths.append(_save(fig, folder / "test_metric.png"))
    paths.append(_updates_to_target(table, styles, folder, plt))
    sharpness = (
        _sharpness_by_batch_size(table, styles, folder, plt),
        _gap_vs_sharpness(table, styles, task, folder, plt),
    )
    return paths + [path for path in sharpness if path is not None]


def _updates_to_target(table: pd.DataFrame, styles: dict, folder: Path, plt: object) -> Path:
    """Updates needed to reach the target against batch size, one line per optimizer (Shallue et al. 2019)."""
    fig, ax = plt.subplots(figsize=(9, 5.5))
    reached = table.dropna(subset=["updates_to_target"])
    for optimizer, rows in reached.groupby("optimizer", sort=False):
        rows = rows.sort_values("batch_size")
        colour = styles[rows["variant"].iloc[0]]["color"]
        ax.plot(rows["batch_size"], rows["updates_to_target"], marker="o", color=colour, label=optimizer)
    missed = sorted(set(table["variant"]) - set(reached["variant"]))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("batch size (rows per update, log scale)")
    ax.set_ylabel("updates to reach the target (log scale)")
    ax.set_title("Updates to reach the target validation metric, by batch size")
    ax.grid(True, which="major", alpha=0.3)
    if len(reached):
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    if missed:
        note = "never reached the target: " + ", ".join(missed[:12]) + (" …" if len(missed) > 12 else "")
        fig.text(0.01, -0.02, note, fontsize=8, ha="left", va="top", wrap=True)
    return _save(fig, folder / "updates_to_target.png")


def _styles(records: list[VariantRecord]) -> dict[str, dict]:
    import matplotlib.pyplot as plt

    optimizers = list(dict.fromkeys(r.params.get("optimizer") for r in records))
    sizes = sorted({_int(r.params.get("batch_size")) for r in records})
    palette = plt.get_cmap("tab10").colors
    dashes = ["-", "--", ":", "-."]
    return {
        r.name: {
            "color": palette[optimizers.index(r.params.get("optimizer")) % len(palette)],
            "linestyle": dashes[sizes.index(_int(r.params.get("batch_size"))) % len(dashes)],
        }
        for r in records
    }


def _first_reach(h: pd.DataFrame, key: str, higher: bool, target: float | None) -> dict:
    if target is None or key not in h:
        return {}
    hit = h[h[key] >= target] if higher else h[h[key] <= target]
    if hit.empty:
        return {}
    row = hit.iloc[0]
    return {"epoch": int(row["epoch"]), "updates": float(row["updates"]), "seconds": float(row["seconds"])}


def _last(h: pd.DataFrame, key: str) -> float:
    values = h[key].dropna() if key in h else pd.Series(dtype=float)
    return float(values.iloc[-1]) if len(values) else np.nan


def noise_scale_note(table: pd.DataFrame) -> str:
    """Where the swept batch sizes sit against the measured gradient noise scale (critical batch size)."""
    finished = table[(table["status"] == "finished") & table["noise_scale"].notna()]
    if finished.empty:
        return ""
    critical = float(finished["noise_scale"].median())
    sizes = sorted(set(finished["batch_size"]))
    below = [str(s) for s in sizes if s < critical / 2]
    near = [str(s) for s in sizes if critical / 2 <= s <= critical * 2]
    above = [str(s) for s in sizes if s > critical * 2]
    parts = [
        f"\n**Gradient noise scale** (McCandlish et al. 2018) at the end of training: about {critical:.0f} rows "
        "(median over the finished variants) — the critical batch size, beyond which bigger batches mostly "
        "buy smoother updates rather than more progress per update."
    ]
    for words, group in (("well below it", below), ("near it", near), ("well above it", above)):
        if group:
            parts.append(f"Batch sizes {words}: {', '.join(group)}.")
    return " ".join(parts)


def _usable(records: list[VariantRecord]) -> list[VariantRecord]:
    return [r for r in records if r.status == "FINISHED" and not r.diverged and not r.history.empty]


def _test(key: str) -> str:
    return "test_" + key.removeprefix("val_")


def _int(value: str | None) -> int:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return -1


def _count(n: float, word: str) -> str:
    return f"{n:.0f} {word}{'' if n == 1 else 's'}"


def _save(fig: object, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _sharpness_by_batch_size(table: pd.DataFrame, styles: dict, folder: Path, plt: object) -> Path | None:
    """Sharpness of the final weights against batch size, one line per optimizer (Keskar et al. 2016).

    None when the table has no sharpness (measure.sharpness off, or runs from before it was measured).
    """
    shown = _with_sharpness(table, ["batch_size", "optimizer"])
    if shown.empty:
        return None
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for i, (optimizer, rows) in enumerate(shown.groupby("optimizer", sort=False)):
        colour, marker = styles.get(rows["variant"].iloc[0], {}).get("color"), MARKERS[i % len(MARKERS)]
        learned = rows[rows["status"] == "finished"] if "status" in rows else rows
        median = learned.groupby("batch_size")["sharpness_top_eigenvalue"].median()  # over seeds
        ax.plot(median.index, median.values, marker=marker, color=colour, label=optimizer, linewidth=1.6, alpha=0.85)
        if len(learned) > len(median):  # several seeds: each one as a dot around the median
            ax.scatter(learned["batch_size"], learned["sharpness_top_eigenvalue"], color=colour, s=10, alpha=0.5)
        others = rows.drop(learned.index)
        ax.scatter(others["batch_size"], others["sharpness_top_eigenvalue"], marker=marker, s=40, facecolors="none",
                   edgecolors=colour)  # fmt: skip
    if "status" in shown and (shown["status"] != "finished").any():
        ax.scatter([], [], marker="o", facecolors="none", edgecolors="grey", label="hollow: learned nothing\n(no line)")
    ax.set_xscale("log")
    _batch_size_ticks(ax, shown)
    _log_if_positive(ax, shown["sharpness_top_eigenvalue"])
    ax.set_xlabel("batch size (rows per update, log scale)")
    ax.set_ylabel("sharpness: top eigenvalue of the training loss's Hessian")
    ax.set_title(
        "Sharpness of the minimum each variant ends in, by batch size\n"
        "(higher = sharper; Keskar et al. 2016: bigger batches end in sharper minima)"
    )
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return _save(fig, folder / "sharpness_by_batch_size.png")


def _gap_vs_sharpness(table: pd.DataFrame, styles: dict, task: str, folder: Path, plt: object) -> Path | None:
    """Generalization gap against sharpness, one labelled point per variant; None without both columns."""
    shown = _with_sharpness(table, ["generalization_gap"])
    if shown.empty or not np.isfinite(shown["generalization_gap"].astype(float)).any():
        return None
    shown = shown[np.isfinite(shown["generalization_gap"].astype(float))]
    fig, ax = plt.subplots(figsize=(10, 6.5))
    sizes = sorted(shown["batch_size"].unique()) if "batch_size" in shown else []
    for _, row in shown.iterrows():
        colour = styles.get(row["variant"], {}).get("color", "C0")
        marker = MARKERS[sizes.index(row["batch_size"]) % len(MARKERS)] if sizes else "o"
        hollow = "status" in row and row["status"] != "finished"
        ax.scatter(row["sharpness_top_eigenvalue"], row["generalization_gap"], marker=marker, s=36,
                   facecolors="none" if hollow else colour, edgecolors=colour)  # fmt: skip
    full = set(shown.loc[shown["regime"] == "batch", "batch_size"]) if "regime" in shown else set()
    for i, size in enumerate(sizes):  # the marker legend: shape = batch size (colour = optimizer, as elsewhere)
        name = f"batch size {size}{' (full)' if size in full else ''}"
        ax.scatter([], [], marker=MARKERS[i % len(MARKERS)], color="grey", label=name)
    _log_if_positive(ax, shown["sharpness_top_eigenvalue"], axis="x")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.margins(x=0.12, y=0.06)  # room for the labels of the outermost points
    metric, gap = ("accuracy", "train − test") if task == "classification" else ("MAE", "test − train")
    ax.set_xlabel("sharpness: top eigenvalue of the training loss's Hessian")
    ax.set_ylabel(f"generalization gap: {gap} {metric}\n(higher = worse on unseen rows)")
    ranks = shown[["sharpness_top_eigenvalue", "generalization_gap"]].astype(float).rank()
    rho = ranks.iloc[:, 0].corr(ranks.iloc[:, 1]) if len(shown) > 2 else math.nan
    said = f"rank correlation {rho:+.2f}" if math.isfinite(rho) else "too few variants for a correlation"
    hollow = "; hollow = learned nothing" if "status" in shown and (shown["status"] != "finished").any() else ""
    ax.set_title(
        "Do sharper minima generalize worse? Generalization gap against sharpness\n"
        f"({said} over {len(shown)} variants{hollow})"
    )
    ax.grid(True, which="major", alpha=0.3)
    if sizes:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    _label_points(fig, ax, shown, styles)
    return _save(fig, folder / "gap_vs_sharpness.png")


MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def _with_sharpness(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The variants with a measured sharpness and the given columns; empty when the table lacks any of them."""
    needed = ["variant", "sharpness_top_eigenvalue", *columns]
    if not set(needed) <= set(table.columns):
        return table.iloc[0:0]
    shown = table.dropna(subset=needed)
    return shown[np.isfinite(shown["sharpness_top_eigenvalue"].astype(float))]


def _log_if_positive(ax: object, values: pd.Series, axis: str = "y") -> None:
    """A log scale when every value is positive (sharpness spans orders of magnitude); linear otherwise."""
    if (values > 0).all():
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


def _batch_size_ticks(ax: object, shown: pd.DataFrame) -> None:
    """Ticks at the swept batch sizes, the batch-descent one marked (full)."""
    from matplotlib.ticker import NullLocator

    sizes = sorted(shown["batch_size"].unique())
    full = set(shown.loc[shown["regime"] == "batch", "batch_size"]) if "regime" in shown else set()
    ax.set_xticks(sizes, [f"{s}\n(full)" if s in full else str(s) for s in sizes])
    ax.xaxis.set_minor_locator(NullLocator())


def _label_points(fig: object, ax: object, shown: pd.DataFrame, styles: dict) -> None:
    """Name each point; points at the same place share one label; a label that would overlap another moves."""
    groups: dict[tuple, list] = {}
    for _, row in shown.iterrows():
        x, y = ax.transData.transform((row["sharpness_top_eigenvalue"], row["generalization_gap"]))
        groups.setdefault((round(x / 6), round(y / 6)), []).append(row)  # within ~6 pixels: one place
    renderer, placed = fig.canvas.get_renderer(), []
    offsets = [
        (5, 3, "left"),
        (5, -10, "left"),
        (-5, 3, "right"),
        (-5, -10, "right"),
        (5, 12, "left"),
        (5, -19, "left"),
    ]
    for rows in groups.values():
        first = rows[0]
        where = (first["sharpness_top_eigenvalue"], first["generalization_gap"])
        colour = styles.get(first["variant"], {}).get("color", "black") if len(rows) == 1 else "black"
        text = ", ".join(r["variant"] for r in rows)
        for dx, dy, align in offsets:
            label = ax.annotate(
                text, where, xytext=(dx, dy), textcoords="offset points", fontsize=7, ha=align, color=colour
            )
            box = label.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in placed):
                break
            label.remove()
        else:
            label = ax.annotate(text, where, xytext=(5, 3), textcoords="offset points", fontsize=7, color=colour)
            box = label.get_window_extent(renderer)
        placed.append(box)
