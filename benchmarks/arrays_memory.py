"""Peak memory of loading and splitting a large .npz (components only): python -m benchmarks.arrays_memory --mb 1024.

Each measurement runs in a fresh process; its peak resident memory (VmHWM, file-backed pages of a
memory map included) is compared with the size of x. `stored` is numpy.savez (memory-mapped),
`compressed` numpy.savez_compressed (decompressed into memory), `plain` what a script would do:
np.load(path)["x"] then x[rows] for each split.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FEATURES = 1024  # float32 values per sample: 4 KiB rows


def generate(path: Path, mb: int, compressed: bool) -> None:
    """x: mb MiB of float32 samples (rows of FEATURES), y: 10 classes; written without holding x in memory twice."""
    import numpy as np

    rows = mb * 2**20 // (4 * FEATURES)
    x = np.lib.format.open_memmap(path.with_suffix(".npy"), mode="w+", dtype=np.float32, shape=(rows, FEATURES))
    rng = np.random.default_rng(0)
    for start in range(0, rows, 8192):
        x[start : start + 8192] = rng.normal(size=x[start : start + 8192].shape)
    (np.savez_compressed if compressed else np.savez)(path, x=x, y=np.arange(rows) % 10)
    path.with_suffix(".npy").unlink()


def measure(path: str, how: str) -> dict:
    """In this (fresh) process: load and split `path`; peak and final resident memory in MiB."""
    import numpy as np

    from components.array_split import split_arrays
    from components.arrays import load_arrays

    base = _status()["VmRSS"]
    started = time.perf_counter()
    if how == "plain":
        with np.load(path) as archive:
            x, _ = archive["x"], archive["y"]
        order = np.random.default_rng(0).permutation(len(x))
        cut = [int(len(x) * 0.7), int(len(x) * 0.85)]
        parts = [x[rows] for rows in np.split(order, cut)]
        del x
        size = sum(p.nbytes for p in parts)
    else:
        split = split_arrays(load_arrays(path), 0.15, 0.15, seed=0)
        size = sum(p.features.nbytes for p in split.parts().values())
    status = _status()
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "rss_before_mb": round(base),
        "peak_rss_mb": round(status["VmHWM"]),
        "rss_after_mb": round(status["VmRSS"]),
        "splits_mb": round(size / 2**20),
    }


def _status() -> dict[str, float]:
    """VmRSS and VmHWM (peak) of this process in MiB, from the kernel."""
    lines = Path("/proc/self/status").read_text().splitlines()
    return {k: int(v.split()[0]) / 1024 for k, v in (line.split(":", 1) for line in lines) if k in ("VmRSS", "VmHWM")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=1024, help="size of x in MiB")
    parser.add_argument("--measure", nargs=2, metavar=("PATH", "HOW"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        for how, compressed in (("stored", False), ("compressed", True), ("plain", False)):
            path = Path(tmp) / f"{how}.npz"
            if not path.exists():
                generate(path, args.mb, compressed)
            command = [sys.executable, "-m", "benchmarks.arrays_memory", "--measure", str(path), how]
            out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            print(json.dumps({"how": how, "x_mb": args.mb, "file_mb": round(path.stat().st_size / 2**20), **result}))


if __name__ == "__main__":
    main()
