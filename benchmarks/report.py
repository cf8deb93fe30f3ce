"""RESULTS.md from the figures benchmarks/run.py measured: every target met or not, and how each was measured."""

from __future__ import annotations

import json
import statistics

from benchmarks.tuned import tuning_section, tuning_targets

CI_MINUTES = 12


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def mean(values: dict) -> float:
    return statistics.fmean(values.values())


def floor(r: dict) -> dict:
    """The sweep's floor: its updates at the bare compiled loop's speed, shared by the cores, plus one process start
    that imports TensorFlow and Keras (what every worker pays once, and the first one before any training)."""
    per_epoch = r["limit"]["limit_epoch_seconds"]
    labels = {str(b): "full" if b == "full" else str(b) for b in r["grid"]["batch_sizes"]}
    compute = sum(
        r["epochs"] * per_epoch[labels[str(b)]] for _ in r["grid"]["optimizers"] for b in r["grid"]["batch_sizes"]
    )
    cores = r["machine"]["cores"]
    return {
        "compute": compute,
        "cores": cores,
        "startup": r["startup"]["seconds"],
        "seconds": compute / cores + r["startup"]["seconds"],
    }


def targets(r: dict) -> list[str]:
    """One table row per target."""
    d2, d1, untracked, peer, sk, lim = (
        r[k] for k in ("descent_2_workers", "descent_1_worker", "descent_untracked", "peer", "sklearn", "limit")
    )
    speedup = peer["seconds"] / d2["seconds"]
    acc_gap = (mean(d2["test_accuracy"]) - mean(peer["test_accuracy"])) * 100
    overall = (d1["seconds"] - untracked["seconds"]) / d1["seconds"]
    pairs = tracking_pairs(r)
    tracking = statistics.median(pairs)
    scaling = d1["seconds"] / d2["seconds"]
    bs1 = lim["descent_steps_per_second_bs1"] / lim["limit_steps_per_second_bs1"]
    bs32 = lim["descent_steps_per_second_bs32"] / lim["limit_steps_per_second_bs32"]
    sk_epoch = sk["seconds"]["adam-bs32"] / sk["epochs"]  # the same optimizer as descent's figure (Adam)
    ours_epoch = lim["descent_epoch_seconds_bs32"]
    repeats = ", ".join(f"{x['seconds']:.1f}" for x in d2["repeats"])
    rows = [
        f"| default sweep (untuned, two workers) <= 30 s wall | {d2['seconds']:.1f} s (median of {repeats}) "
        f"| {verdict(d2['seconds'] <= 30)} |",
        f"| default sweep >= 12x faster than the plain Keras + autolog loop | {speedup:.1f}x "
        f"({d2['seconds']:.1f} s vs {peer['seconds']:.0f} s) | {verdict(speedup >= 12)} |",
        f"| mean test accuracy within 1 point of the loop's | {acc_gap:+.2f} points "
        f"({mean(d2['test_accuracy']):.4f} vs {mean(peer['test_accuracy']):.4f}) | {verdict(abs(acc_gap) <= 1)} |",
        f"| batch-1 throughput >= 80% of the compiled-epoch limit | {bs1:.0%} "
        f"({lim['descent_steps_per_second_bs1']:,.0f} vs {lim['limit_steps_per_second_bs1']:,.0f} updates/s) "
        f"| {verdict(bs1 >= 0.8)} |",
        f"| batch-32 throughput >= 70% of the limit | {bs32:.0%} "
        f"({lim['descent_steps_per_second_bs32']:,.0f} vs {lim['limit_steps_per_second_bs32']:,.0f} updates/s) "
        f"| {verdict(bs32 >= 0.7)} |",
        f"| batch 32, Adam: seconds per epoch (after the first) <= scikit-learn's MLPClassifier | "
        f"{ours_epoch * 1000:.1f} ms vs {sk_epoch * 1000:.1f} ms | {verdict(ours_epoch <= sk_epoch)} |",
        f"| tracking <= 5% of sweep time (one worker, tracked vs the same work untracked, run back to back) | "
        f"{tracking:.1%} (median of the pairs: {', '.join(f'{x:.1%}' for x in pairs)}; of the medians {overall:.1%}: "
        f"{d1['seconds']:.1f} s vs {untracked['seconds']:.1f} s) | {verdict(tracking <= 0.05)} |",
        f"| two workers on two cores >= 1.6x one worker | {scaling:.2f}x "
        f"({d1['seconds']:.1f} s vs {d2['seconds']:.1f} s) | {verdict(scaling >= 1.6)} |",
        *large_targets(r["large"]),
        *tuning_targets(r, verdict),
    ]
    if "ci" in r:
        ci = r["ci"]
        ok = ci["seconds"] <= CI_MINUTES * 60 and ci["returncode"] == 0
        said = "; ".join(ci["summary"]).replace("|", "/")  # pytest's lines, in a table cell
        rows.append(
            f"| `.ci/run` on a fresh clone (install, lint, every test) <= {CI_MINUTES} min | "
            f"{ci['seconds'] / 60:.1f} min, exit {ci['returncode']} ({said}) | {verdict(ok)} |"
        )
    else:
        untimed = "not timed in this run (--smoke or --no-ci)"
        rows.append(f"| `.ci/run` on a fresh clone <= {CI_MINUTES} min | {untimed} | **not measured** |")
    return rows


def tracking_pairs(r: dict) -> list[float]:
    """What tracking adds to each repeat: the tracked one-worker sweep against the untracked one run right after it
    (the same machine state: a load that comes and goes weighs on both), as a share of the tracked time."""
    return [
        (t["seconds"] - u["seconds"]) / t["seconds"]
        for t, u in zip(r["descent_1_worker"]["repeats"], r["descent_untracked"]["repeats"], strict=True)
    ]


def report(r: dict, command: str) -> str:
    """RESULTS.md: every figure, the ratios, each target met or not."""
    d2, d1, untracked = r["descent_2_workers"], r["descent_1_worker"], r["descent_untracked"]
    lim, m, f = r["limit"], r["machine"], floor(r)
    n = len(d2["test_accuracy"])
    cpu_tracking = (d1["cpu_seconds"] - untracked["cpu_seconds"]) / d1["cpu_seconds"]
    lines = [
        "# Benchmark results",
        "",
        f"Measured {r['measured_at']} at commit {r['commit']} in one run of `{command}`, every figure on the same",
        f"machine one after the other: {m['cores']} cores ({m['cpu']}), {m['memory_gb']} GiB, {m['gpus']} GPU(s),",
        f"Python {m['python']}, TensorFlow {m['tensorflow']}, {m['system']}. Load average (1 min) "
        f"{r['load_average']['at start']:.1f} at the start, {r['load_average']['at end']:.1f} at the end: on a "
        "shared machine the times are longer than on an idle one.",
        f"Grid: {', '.join(r['grid']['optimizers'])} x batch sizes {', '.join(map(str, r['grid']['batch_sizes']))}"
        f" ({n} variants), {r['epochs']} epochs, digits (descent's split: 1,257 training rows).",
        "Wall times include starting Python and importing TensorFlow, as a user waits for them. Each sweep ran "
        f"{len(d2['repeats'])} time(s), interleaved with the others; times are medians.",
        "",
        "## Targets",
        "",
        "| target | measured | |",
        "| --- | --- | --- |",
        *targets(r),
        "",
        f"**The floor** of the default sweep on this machine: its updates at the bare compiled loop's speed "
        f"({f['compute']:.1f} s of compute on one core, {f['compute'] / f['cores']:.1f} s on {f['cores']}) plus one "
        f"process importing TensorFlow and Keras ({f['startup']:.1f} s), {f['seconds']:.1f} s in all. The sweep took "
        f"{d2['seconds']:.1f} s, {d2['seconds'] / f['seconds']:.1f}x its floor; the rest is the other processes' "
        "start-up, tracking, the measurements (validation checks, gradient probe, sharpness), the comparison and its "
        "plots.",
        "",
        "How each is measured: sweep times are wall seconds of `python -m pipelines.sweep` on a fresh sqlite store "
        "(store creation included), the peer's of `python -m benchmarks.peer`; CPU seconds are the process's and its "
        "workers' (user + system). Throughputs are updates per second of epochs 2 onwards, descent's `fit_variant` "
        "and the bare loop alternating in one process on one thread (`benchmarks/limit.py`). Tracking is the "
        "one-worker sweep against `benchmarks/untracked.py`: the same variants in the same order through the same "
        "code (training, probes, evaluations, sharpness, the comparison's table, summary and plots) without MLflow "
        f"(not even imported). By CPU seconds tracking is {cpu_tracking:.1%} "
        f"({d1['cpu_seconds']:.1f} s vs {untracked['cpu_seconds']:.1f} s). What it adds: importing MLflow, a new "
        "store's schema, per variant its run (created with its tags, its metrics in batches, params, final metrics "
        "and tags in one batch at the end, its trained weights as network/weights.npz), the parent run's config, data "
        "record and comparison artifacts, and the best variant's network.keras and servable model. Most of it is "
        "done by the sweep's tracking "
        "writer process (`tracking.writer`) while the sweep trains: the wall figure is what the sweep waits for, "
        "the CPU figure what tracking costs the machine. Large data: peak RSS is the kernel's `ru_maxrss` of the "
        "sweep process (`benchmarks/large.py`).",
        "",
        "| sweep | wall seconds (each repeat) | CPU seconds (each repeat) | load average before (each repeat) |",
        "| --- | --- | --- | --- |",
    ]
    for name in ("descent_2_workers", "descent_1_worker", "descent_untracked", "descent_tuned"):
        cells = [", ".join(f"{x[key]:.1f}" for x in r[name]["repeats"]) for key in ("seconds", "cpu_seconds")]
        cells.append(", ".join(f"{x['load_before']:.1f}" for x in r[name]["repeats"]))
        lines.append(f"| {name} | {' | '.join(cells)} |")
    lines += [
        "",
        "One-time compile cost per variant (the first epoch's extra seconds: tracing and compiling the epoch):",
        f"descent {lim['descent_compile_seconds_bs1']:.2f} s at batch size 1, "
        f"{lim['descent_compile_seconds_bs32']:.2f} s at 32; the bare limit loop "
        f"{lim['limit_compile_seconds_bs1']:.2f} s and {lim['limit_compile_seconds_bs32']:.2f} s.",
        "Throughput inside the two-worker sweep (each process on one core, gradient measurements on): "
        + ", ".join(f"{k} {v:,.0f} updates/s" for k, v in d2["updates_per_second_in_sweep"].items())
        + ".",
        "",
        *accuracy_section(r),
        "",
        *large_section(r["large"]),
        "",
        *tuning_section(r),
        "",
        *stacked_section(r["stacked"]),
        "",
        "## Raw figures",
        "",
        "```json",
        json.dumps(r, indent=1, sort_keys=True),
        "```",
        "",
    ]
    return "\n".join(lines)


def accuracy_section(r: dict) -> list[str]:
    """Test accuracy of every variant: descent, the loop, scikit-learn."""
    d2, peer, sk = r["descent_2_workers"], r["peer"], r["sklearn"]
    lines = [
        "## Test accuracy per variant",
        "",
        "| variant | descent | Keras + autolog loop | scikit-learn MLPClassifier | sklearn seconds |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in sorted(d2["test_accuracy"]):
        skl, skl_s = sk["test_accuracy"].get(name), sk["seconds"].get(name)
        lines.append(
            f"| {name} | {d2['test_accuracy'][name]:.4f} | {peer['test_accuracy'].get(name, float('nan')):.4f} | "
            + (f"{skl:.4f} | {skl_s:.2f} |" if skl is not None else "– | – |")
        )
    return lines


def large_targets(large: dict) -> list[str]:
    """The two large-data targets, on the largest file measured."""
    base = large["baseline_20000_rows"]["peak_rss_mb"]
    sizes = sorted((k for k in large if k.isdigit()), key=int)
    big, small = large[sizes[-1]], large[sizes[0]]
    above = (big["peak_rss_mb"] - base) / big["feature_matrix_mb"]
    rows = int(sizes[-1]) / int(sizes[0])
    grow = big["epoch_seconds"]["adam-bs256"] / small["epoch_seconds"]["adam-bs256"]
    return [
        f"| {int(sizes[-1]):,} rows x 50 float32 features from Parquet: peak RSS above a small sweep's <= 3x the "
        f"feature matrix | {above:.1f}x ({big['peak_rss_mb'] - base:,.0f} MB above {base:,.0f} MB, matrix "
        f"{big['feature_matrix_mb']:.0f} MB) | {verdict(above <= 3)} |",
        f"| time per epoch grows linearly with rows | {grow:.1f}x for {rows:.0f}x the rows | "
        f"{verdict(grow <= rows * 1.2)} |",
    ]


def large_section(large: dict) -> list[str]:
    """Peak memory and seconds per epoch as the generated Parquet file grows."""
    large = dict(large)
    base = large.pop("baseline_20000_rows")
    lines = [
        "## Large data: N rows x 50 float32 features from Parquet, 2-variant sweep (adam, batch 256 and 4096)",
        "",
        "A sweep process that imports TensorFlow (its tracking writer imports MLflow) and sweeps 20,000 rows "
        f"peaks at {base['peak_rss_mb']:,.0f} MB "
        "(the baseline below). One worker, tuning.method=none. The preprocessor is fitted on 100,000 of the training "
        "rows (split.preprocess_rows).",
        "",
        "| rows | feature matrix (float32) | peak RSS | above baseline | above baseline / matrix | "
        "seconds per epoch (bs 256) | seconds per epoch (bs 4096) | sweep wall |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for rows, m in large.items():
        above = m["peak_rss_mb"] - base["peak_rss_mb"]
        lines.append(
            f"| {int(rows):,} | {m['feature_matrix_mb']:.0f} MB | {m['peak_rss_mb']:,.0f} MB | {above:,.0f} MB | "
            f"{above / m['feature_matrix_mb']:.1f}x | {m['epoch_seconds'].get('adam-bs256', float('nan')):.2f} | "
            f"{m['epoch_seconds'].get('adam-bs4096', float('nan')):.2f} | {m['wall_seconds']:.0f} s |"
        )
    return lines


def stacked_section(s: dict) -> list[str]:
    """Whether training a variant's trials as one stacked model would pay (benchmarks/stacked.py)."""
    e = s["seconds_per_epoch"]
    return [
        "## Learning-rate trials as one stacked model? (batch size 1, digits, one core)",
        "",
        f"Seconds per epoch ({s['updates_per_epoch']:,} updates): one trial in descent's Trainer "
        f"{e['descent']:.3f}; one network in the bare compiled loop {e['bare']:.3f}; {s['trials']} networks "
        f"stacked in that loop {e['stacked']:.3f}, so {e['stacked'] / s['trials']:.3f} per trial: "
        f"{s['stacked_share_of_a_trial_epoch']:.2f}x a trial's epoch in descent. Only the trials that train "
        "side by side gain: the grid's first rungs (5 trials for 2 of 20 epochs, then 2 for 5 more); the chosen "
        "rate's last 13 epochs train alone, as an untuned variant's do.",
    ]
