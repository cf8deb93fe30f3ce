"""Compare the variants of a sweep: one table row each, plots a person reads, a short summary."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from components.claims import claims_markdown, claims_table
from components.report import markdown_table
from components.trajectory import first_reach, loss_rises, recent_drop, roughness
from components.tuning_report import inclusion_lines, slope_lines, tuning_lines

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
    checks: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per validation check (trajectory.py)
    tags: dict[str, str] = field(default_factory=dict)


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


def comparison_table(
    records: list[VariantRecord], task: str, target: float | None, collapse_threshold: float | None = 0.1
) -> pd.DataFrame:
    """One row per variant, best first (ranked on the final validation metric, never on test).

    A finished variant whose validation score closes less than `collapse_threshold` of the way from
    chance (or the training mean) to perfect learned nothing: it is `collapsed` (never, with None).
    """
    key, higher = RANKING[task]
    metric = key.removeprefix("val_")
    rows = []
    for r in records:
        h, f = r.history, r.final
        values = h[key] if key in h else pd.Series(dtype=float)
        best_at = (values.idxmax() if higher else values.idxmin()) if values.notna().any() else None
        reached = first_reach(r.checks, key, higher, target) or _first_reach(h, key, higher, target)
        final_val = values.iloc[-1] if len(values) else np.nan
        skill = _skill(task, final_val, _last(h, "val_loss"), f)
        status = "diverged" if r.diverged else r.status.lower()
        if status == "finished" and collapse_threshold is not None and skill < collapse_threshold:
            status = "collapsed"
        rows.append(
            {
                "variant": r.name,
                "group": r.group or r.name,
                "seed": _int(r.params.get("seed")),
                "optimizer": r.params.get("optimizer"),
                "batch_size": _int(r.params.get("batch_size")),
                "regime": r.params.get("regime"),
                "status": status,
                "learning_rate": _float(r.params.get("learning_rate")),
                "lr_chosen_by": r.tags.get("descent.lr_chosen_by", "config"),
                "lr_at_edge": r.tags.get("descent.lr_at_edge") == "true",
                "trials": f.get("tuning_trials", 0.0),
                "tuning_seconds": f.get("tuning_seconds", 0.0),
                f"final_{key}": final_val,
                f"best_{key}": values.loc[best_at] if best_at is not None else np.nan,
                "best_epoch": int(h.loc[best_at, "epoch"]) if best_at is not None else np.nan,
                "val_skill": skill,
                _test(key): f.get(_test(key), np.nan),
                f"final_train_{metric}": f.get(f"final_train_{metric}", np.nan),
                "final_train_loss": f.get("final_train_loss", np.nan),
                "final_val_loss": _last(h, "val_loss"),
                "generalization_gap": _gap(f, metric, higher),
                "loss_gap": _last(h, "val_loss") - f.get("final_train_loss", np.nan),
                "train_seconds": f.get("train_seconds", np.nan),
                "updates": f.get("total_updates", np.nan),
                "epochs_to_target": reached.get("epoch", np.nan),
                "updates_to_target": reached.get("updates", np.nan),
                "seconds_to_target": reached.get("seconds", np.nan),
                "train_peak_memory_mb": f.get("train_peak_memory_mb", np.nan),
                "samples_per_second": f.get("samples_per_second", np.nan),
                "loss_noise": float(h["loss_noise"].median()) if "loss_noise" in h else np.nan,
                "train_loss_rises": loss_rises(r.checks),
                "train_loss_roughness": roughness(r.checks),
                "train_loss_recent_drop": recent_drop(r.checks),
                "sharpness_top_eigenvalue": f.get("sharpness_top_eigenvalue", np.nan),
                "sharpness_epsilon": f.get("sharpness_epsilon", np.nan),
                "process_peak_memory_mb": f.get("process_peak_memory_mb", np.nan),
                # At the variant's end: empty when the last epoch's noise scale could not be measured.
                "noise_scale": _at_end(h, "noise_scale"),
                "noise_scale_se": _at_end(h, "noise_scale_se"),
                "noise_scale_unmeasured": _last(h, "noise_scale_unmeasured"),
                "val_rows": _float(r.params.get("val_rows")),
                "test_rows": _float(r.params.get("test_rows")),
                "diverged": r.diverged,
                "run_id": r.run_id,
            }
        )
    table = pd.DataFrame(rows)
    # Collapsed, failed, diverged and unvalidated (split.validation=0) variants rank last.
    score = table[f"final_{key}"] * (-1 if higher else 1)
    table["_rank"] = np.where((table["status"] == "finished") & score.notna(), score, np.inf)
    return table.sort_values(["_rank", "train_seconds"]).drop(columns="_rank").reset_index(drop=True)


def _skill(task: str, final_val: float, val_loss: float, final: dict[str, float]) -> float:
    """How far the final validation score got from chance (or the training mean, for regression) to perfect."""
    if task == "classification":
        chance = final.get("baseline_val_accuracy", np.nan)
        return (final_val - chance) / (1 - chance) if chance < 1 else np.nan
    baseline = final.get("baseline_val_loss", np.nan)
    return 1 - val_loss / baseline if baseline > 0 else np.nan  # validation R^2 against the training mean


def _gap(final: dict[str, float], metric: str, higher: bool) -> float:
    """How much worse the final weights score on test than on training rows (positive = worse on unseen rows)."""
    train, test = final.get(f"final_train_{metric}", np.nan), final.get(f"test_{metric}", np.nan)
    return train - test if higher else test - train


def summary_markdown(table: pd.DataFrame, task: str, target: float | None, title: str) -> str:
    """A short summary: the best variant, the fastest to the target, how the learning rates were chosen, the
    claims of the study notes, and the collapsed, diverged and failed variants."""
    key, higher = RANKING[task]
    finished = table[table["status"] == "finished"]
    seeds = seed_table(table, task)
    lines = [f"# {title}", ""] + _headline(table, task, target, seeds)
    lines += tuning_lines(table)
    if "noise_scale" in table:
        note = noise_scale_note(table)
        if note:
            lines.append(note)
    if seeds is not None:
        lines += [
            "",
            f"**Across seeds** (final {key}, mean and standard deviation per variant): {seed_verdict(table, task)}",
        ]
        lines += ["", markdown_table(seeds)]
    elif not finished.empty:
        lines.append(
            "\n**One seed per variant**: a lead smaller than the spread between seeds cannot be told from luck. "
            "Run with `sweep.seeds: [0, 1, 2]` to measure that spread and get a verdict on the best variant."
        )
    spread = seeds.set_index("variant")[f"sd_{key}"] if seeds is not None else None
    lines += slope_lines(table) + inclusion_lines(table, key, higher, spread)
    claims = claims_table(table, key.removeprefix("val_"), higher)
    lines += [
        "",
        "**The study notes' claims, measured on this data** (median over each regime's variants; *agrees* or "
        "*disagrees* only when the difference is larger than the one needed, else *too close to call*):",
    ]
    lines += ["", claims_markdown(claims)]
    for status, word in (
        ("collapsed", "Collapsed (finished but learned nothing: validation score near chance)"),
        ("diverged", "Diverged (loss became NaN or infinite)"),
        ("failed", "Failed"),
    ):
        names = table.loc[table["status"] == status, "variant"].tolist()
        lines.append(f"\n{word}: {', '.join(names) if names else 'none'}.")
    shown = ["variant", "learning_rate", f"final_{key}", _test(key), "train_seconds", "updates", "seconds_to_target"]
    lines += ["", markdown_table(table, [*shown, "status"])]
    return "\n".join(lines) + "\n"


def _headline(table: pd.DataFrame, task: str, target: float | None, seeds: pd.DataFrame | None) -> list[str]:
    """The best variant and the fastest to the target: by their mean over seeds when there are seeds."""
    key, higher = RANKING[task]
    finished = table[table["status"] == "finished"]
    if finished.empty:
        return ["No variant finished with a score above chance: see the collapsed, failed and diverged runs below."]
    by = finished.groupby("group", sort=False)
    means = by[[f"final_{key}", _test(key), "train_seconds", "updates", "learning_rate"]].mean()
    n = by["seed"].nunique()
    if seeds is not None:
        group = seeds.iloc[0]["variant"]
        about = f"mean over {n[group]} seeds"
    else:
        group = finished.iloc[0]["group"]
        about = "one seed"
    best = means.loc[group]
    lines = [
        f"**Best variant: {group}** ({about}) — final {key} {best[f'final_{key}']:.4f} "
        f"({'higher' if higher else 'lower'} is better), test {best[_test(key)]:.4f}, learning rate "
        f"{best['learning_rate']:.3g}, {best['train_seconds']:.3g} s, {best['updates']:.0f} updates."
    ]
    if target is None:
        return lines
    # A variant reaches the target when every one of its seeds finished and reached it; its time is their mean.
    reach = table.groupby("group", sort=False)
    timed = reach[["seconds_to_target", "epochs_to_target", "updates_to_target"]].mean()
    ok = reach.apply(lambda rows: (rows["status"] == "finished").all() and rows["seconds_to_target"].notna().all())
    timed = timed[ok].sort_values("seconds_to_target")
    if timed.empty:
        return [*lines, f"\nNo variant reached the target {key} {target:.4f}."]
    fastest, f = timed.index[0], timed.iloc[0]
    over = ", mean over seeds" if seeds is not None else ""
    return [
        *lines,
        f"\n**Fastest to the target** ({key} {target:.4f}; seconds of training{over}): {fastest} in "
        f"{f['seconds_to_target']:.3g} s, {_count(f['epochs_to_target'], 'epoch')}, "
        f"{_count(f['updates_to_target'], 'update')}.",
    ]


def seed_table(table: pd.DataFrame, task: str) -> pd.DataFrame | None:
    """Mean and spread of the final validation metric per variant over its seeds; None with one seed each.

    The spread (standard deviation) needs two finished seeds: with one it is left empty, not 0.
    """
    key, higher = RANKING[task]
    finished = table[table["status"] == "finished"]
    if finished.empty or finished.groupby("group")["seed"].nunique().max() < 2:
        return None
    grouped = finished.groupby("group", sort=False)
    out = pd.DataFrame(
        {
            "seeds": grouped["seed"].nunique(),
            f"mean_{key}": grouped[f"final_{key}"].mean(),
            f"sd_{key}": grouped[f"final_{key}"].std(ddof=1),
            f"mean_{_test(key)}": grouped[_test(key)].mean(),
            "mean_train_seconds": grouped["train_seconds"].mean(),
        }
    )
    out = out.sort_values(f"mean_{key}", ascending=not higher).reset_index(names="variant")
    return out


CONFIDENCE = 0.95  # of the paired interval behind "a clear winner": a false winner in at most 5 % of ties


def paired_interval(differences: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Mean of per-seed differences and its two-sided t-interval at `confidence`: (mean, low, high)."""
    from scipy.stats import t

    d = np.asarray(differences, dtype=float)
    mean = float(d.mean())
    half = float(t.ppf((1 + confidence) / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    return mean, mean - half, mean + half


def seed_verdict(table: pd.DataFrame, task: str) -> str:
    """Whether the best variant (by mean over seeds) beats the runner-up on the seeds both finished.

    Variants with the same seed start from the same weights and see the rows in the same order, so their results
    are paired: the test is on the per-seed differences, a t-interval at CONFIDENCE; "a clear winner" only when
    it excludes 0.
    """
    seeds = seed_table(table, task)
    key, higher = RANKING[task]
    if seeds is None:
        return "One seed per variant: no verdict."
    best = seeds.iloc[0]
    if len(seeds) < 2:
        return f"{best['variant']} is the only variant that finished."
    second = seeds.iloc[1]
    few = [v for v in (best, second) if v["seeds"] < 2]
    if few:
        names = " and ".join(f"{v['variant']} ({v['seeds']})" for v in few)
        return f"No verdict: {names} finished fewer than two seeds; a comparison across seeds needs two each."
    finished = table[table["status"] == "finished"]
    values = finished.pivot_table(index="seed", columns="group", values=f"final_{key}", aggfunc="mean")
    pairs = values[[best["variant"], second["variant"]]].dropna()
    if len(pairs) < 2:
        return f"No verdict: {best['variant']} and {second['variant']} finished fewer than two seeds in common."
    sign = 1 if higher else -1  # positive = the best variant is better
    mean, low, high = paired_interval(sign * (pairs[best["variant"]] - pairs[second["variant"]]))
    scale, unit = (100, "points") if task == "classification" else (1, key.removeprefix("val_"))
    said = (
        f"{best['variant']} leads {second['variant']} by {mean * scale:.2g} {unit} on average over "
        f"{len(pairs)} paired seeds ({CONFIDENCE:.0%} interval {low * scale:.2g} to {high * scale:.2g})"
    )
    if low > 0:
        return f"{said}: a clear winner (the interval excludes 0)."
    return f"No clear winner: {said}, an interval that includes 0."


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
    """first_reach on the per-epoch history (a run without validation checks): its epoch a whole one."""
    reached = first_reach(h.rename(columns={"seconds": "train_seconds"}), key, higher, target)
    return reached | {"epoch": int(reached["epoch"])} if reached else {}


def _float(value: str | None) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return np.nan


def _at_end(h: pd.DataFrame, key: str) -> float:
    return float(h[key].iloc[-1]) if key in h and len(h) else np.nan


def _last(h: pd.DataFrame, key: str) -> float:
    values = h[key].dropna() if key in h else pd.Series(dtype=float)
    return float(values.iloc[-1]) if len(values) else np.nan


def noise_scale_note(table: pd.DataFrame) -> str:
    """Where each variant's batch size sits against its own gradient noise scale at the end of its training."""
    finished = table[table["status"] == "finished"]
    if finished.empty or "noise_scale" not in finished:
        return ""
    measured = finished.dropna(subset=["noise_scale"])
    head = (
        "\n**Gradient noise scale** (McCandlish et al. 2018), each variant's own at the end of its training: the "
        "critical batch size, beyond which bigger batches mostly buy smoother updates rather than more progress "
        "per update. Each batch size against the noise scale of its own variants"
    )
    if "noise_scale_se" in measured and measured["noise_scale_se"].notna().any():
        relative = (measured["noise_scale_se"] / measured["noise_scale"]).max()
        head += " (exact)" if relative == 0 else f" (estimated; standard errors up to {relative:.0%})"
    head, sizes = head + ":", []
    for size, rows in measured.groupby("batch_size", sort=True):
        ratio = size / rows["noise_scale"]
        counts = [
            f"{words} in {n}" for words, n in (
                ("well below it (under half)", int((ratio < 0.5).sum())),
                ("near it", int(((ratio >= 0.5) & (ratio <= 2)).sum())),
                ("well above it (over twice)", int((ratio > 2).sum())),
            ) if n
        ]  # fmt: skip
        name = f"full batch ({size} rows)" if (rows["regime"] == "batch").all() else f"batch size {size}"
        low, high = rows["noise_scale"].min(), rows["noise_scale"].max()
        span = f"{low:,.0f}" if round(low) == round(high) else f"{low:,.0f} to {high:,.0f}"
        sizes.append(f"{name}: {', '.join(counts)} of {len(rows)} (noise scales {span} rows)")
    missing = finished.loc[finished["noise_scale"].isna(), "variant"].tolist()
    if missing:
        sizes.append(f"not measurable at the end: {', '.join(missing)}")
    text = f"{head} {'; '.join(sizes)}."
    if "noise_scale_unmeasured" in finished and finished["noise_scale_unmeasured"].fillna(0).sum() > 0:
        count = int(finished["noise_scale_unmeasured"].fillna(0).sum())
        text += f" {count} measurement(s) along the way could not be made (none is filled in from another)."
    return text


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
    return f"{n:.3g} {word}{'' if n == 1 else 's'}"


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
