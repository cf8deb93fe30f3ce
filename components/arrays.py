"""Array data (a .npz of x and y, an image folder, digits_images): samples of any shape, each hashed once.

Large arrays are not copied to be read: an uncompressed .npz is memory-mapped, and every pass over it
(hashing here, taking the split's samples in array_split.py) reads it in chunks and hands the pages
back, so the process holds one chunk of the file at a time besides the arrays it keeps.
"""

from __future__ import annotations

import hashlib
import mmap
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from components.data import EMBEDDED, TASKS, detect_task
from components.errors import InputError
from components.images import digits_images, read_image_folder

ARRAY_EMBEDDED = ("digits_images",)
CHUNK_BYTES = 16 * 2**20  # one pass over the samples reads this much at a time
NUMERIC_KINDS = "biuf"  # bool, signed and unsigned integers, floats
TABLE_PARTS = (".parquet", ".pq")  # files that make a folder a table, not a folder of images


@dataclass(frozen=True, eq=False)
class ArrayDataset:
    """Samples of any shape, their labels (or values) and what is known about them: a Dataset of arrays."""

    features: np.ndarray  # (samples, *sample_shape); read-only and memory-mapped for an uncompressed .npz
    target: pd.Series  # one label or value per sample
    task: str
    name: str
    source: str
    digest: str
    hashes: np.ndarray  # uint64 per sample: a hash of its feature bytes (equal samples, equal hashes)
    reading: dict[str, str] = field(default_factory=dict)  # how a file or folder was read, as for tables

    @property
    def target_name(self) -> str:
        return str(self.target.name)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.features.shape[1:])


def is_array_source(source: str) -> bool:
    """Whether data.source names array data: digits_images, a .npz file or a folder (of images).

    An embedded table's name stays a table even where a folder of that name exists, and a folder that holds
    Parquet files (a table written as part files, as Spark and Arrow write one) is a table too.
    """
    if source in EMBEDDED:
        return False
    path = Path(source)
    if path.is_dir():
        return not any(p.suffix.lower() in TABLE_PARTS for p in path.rglob("*"))
    return source in ARRAY_EMBEDDED or path.suffix.lower() == ".npz"


def load_arrays(
    source: str,
    target: str | None = None,
    task: str = "auto",
    image_size: tuple[int, int] | list[int] | None = None,
    color_mode: str = "rgb",
) -> ArrayDataset:
    """digits_images, a .npz file holding arrays x (samples first) and y, or a folder of class subfolders."""
    path = Path(source)
    if source in ARRAY_EMBEDDED or path.is_dir():
        if target is not None:
            if source in ARRAY_EMBEDDED:
                raise InputError(f"data.target={target!r} does not apply to {source}: its labels are its classes")
            raise InputError(
                f"data.target={target!r} does not apply to {source}: a folder is read as images, one subfolder per "
                "class (its labels): remove data.target, or give a .csv or .parquet file for a table"
            )
        if task == "regression":
            raise InputError(f"{source} holds images of classes, not a regression target: set data.task=auto")
        if source in ARRAY_EMBEDDED:
            x, y = digits_images()
            return array_dataset(x, y, task, source, "sklearn.datasets.load_digits as 8x8x1 images", "label")
        x, y = read_image_folder(source, tuple(image_size) if image_size else None, color_mode)
        size = "x".join(map(str, image_size)) if image_size else "as stored"
        reading = {"format": "images", "color_mode": color_mode, "image_size": size}
        return array_dataset(x, y, task, path.name, str(path.resolve()), "label", where=source, reading=reading)
    if target not in (None, "y"):
        raise InputError(f"data.target={target!r} does not apply to {source}: a .npz gives its labels as array y")
    x, y = read_npz(path)
    reading = {"format": "npz", "memory_mapped": str(isinstance(x, np.memmap)).lower()}
    return array_dataset(x, y, task, path.stem, str(path.resolve()), "y", where=source, reading=reading)


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Arrays x and y of a .npz: memory-mapped when stored uncompressed (numpy.savez), else read."""
    if not path.is_file():
        raise InputError(f"data file not found: {path}: give an existing .npz file (numpy.savez(path, x=..., y=...))")
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
    except (zipfile.BadZipFile, OSError):
        raise InputError(f"cannot read {path} as .npz: it is not a numpy archive: save it with numpy.savez") from None
    missing = [key for key in ("x", "y") if key not in members]
    if missing:
        has = ", ".join(sorted(members)) or "no arrays"
        raise InputError(
            f"{path} lacks array {' and '.join(missing)} (it has {has}): "
            "save the samples as x and their labels as y: numpy.savez(path, x=x, y=y)"
        )
    x, y = (_member(path, members[key]) for key in ("x", "y"))
    return x, np.array(y)  # the labels are small: in memory


def array_dataset(
    x: np.ndarray,
    y: np.ndarray,
    task: str,
    name: str,
    source: str,
    target_name: str,
    where: str = "",
    reading: dict[str, str] | None = None,
) -> ArrayDataset:
    """Check samples x and labels y (one per sample), hash every sample and digest the whole.

    `where` names the data in error messages (the path the user gave; the name by default); `reading` says how
    it was read (format, storage).
    """
    where = where or name
    _check_shapes(x, y, where)
    labels = pd.Series(y.reshape(len(y)), name=target_name)
    resolved = detect_task(labels) if task == "auto" else task
    if resolved not in TASKS:
        raise InputError(f"unknown task {task!r}: use auto, classification or regression")
    _check_labels(labels, resolved, where)
    hashes = sample_hashes(x, where)
    digest = hashlib.sha256(hashes.tobytes())
    digest.update(pd.util.hash_pandas_object(labels, index=False).to_numpy().tobytes())
    digest.update(f"{x.shape}{x.dtype}".encode())
    return ArrayDataset(x, labels, resolved, name, source, digest.hexdigest()[:16], hashes, dict(reading or {}))


def sample_hashes(x: np.ndarray, where: str = "the data") -> np.ndarray:
    """A 64-bit hash of each sample's feature bytes (-0.0 read as 0.0), checking that every value is finite."""
    hashes = np.empty(len(x), np.uint64)
    width = int(np.prod(x.shape[1:])) * x.dtype.itemsize
    for start, chunk in chunks(x):
        chunk = np.ascontiguousarray(chunk)
        if chunk.dtype.kind == "f":
            finite = np.isfinite(chunk.reshape(len(chunk), -1)).all(axis=1)
            if not finite.all():
                bad = start + int(np.flatnonzero(~finite)[0])
                raise InputError(
                    f"{where}: sample {bad} of x holds NaN or infinite values: replace them or drop the sample"
                )
            if (np.signbit(chunk) & (chunk == 0)).any():
                chunk = chunk + chunk.dtype.type(0)  # -0.0 + 0.0 = 0.0: equal values, equal bytes
        flat = memoryview(chunk.reshape(-1).view(np.uint8))
        digests = b"".join(
            hashlib.blake2b(flat[i * width : (i + 1) * width], digest_size=8).digest() for i in range(len(chunk))
        )
        hashes[start : start + len(chunk)] = np.frombuffer(digests, "<u8")
    return hashes


def chunks(x: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, rows) of x, CHUNK_BYTES at a time; a memory map's pages are released after each chunk."""
    rows = max(1, CHUNK_BYTES // max(1, x[:1].nbytes))
    for start in range(0, len(x), rows):
        yield start, x[start : start + rows]
        release(x)


def take(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """x[rows] (rows in increasing order) as a new in-memory array, read CHUNK_BYTES of x at a time.

    The chunks are windows of x, not runs of rows: sparse rows (a test split) touch no more of a
    memory map at a time than dense ones, and its pages are released after each window.
    """
    if np.any(np.diff(rows) < 0):
        raise ValueError("take needs rows in increasing order")
    out = np.empty((len(rows), *x.shape[1:]), x.dtype)
    step = max(1, CHUNK_BYTES // max(1, x[:1].nbytes))
    bounds = np.searchsorted(rows, np.arange(0, len(x) + step, step))
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        if end > start:
            out[start:end] = x[rows[start:end]]  # (np.take with out= reads all of a memory map)
            release(x)
    return out


def release(x: np.ndarray) -> None:
    """Hand a memory-mapped array's pages back to the page cache (they are read again when touched)."""
    base = x
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    if base is not None and hasattr(mmap, "MADV_DONTNEED"):
        base.madvise(mmap.MADV_DONTNEED)


def _member(path: Path, info: zipfile.ZipInfo) -> np.ndarray:
    """One array of the archive: a read-only memory map of its bytes when stored, else decompressed."""
    try:
        if info.compress_type == zipfile.ZIP_STORED:
            with path.open("rb") as handle:
                handle.seek(info.header_offset + 26)  # the local header: name and extra field lengths at 26
                name_length, extra_length = struct.unpack("<HH", handle.read(4))
                handle.seek(info.header_offset + 30 + name_length + extra_length)
                version = np.lib.format.read_magic(handle)
                if version in ((1, 0), (2, 0)):
                    read_header = getattr(np.lib.format, f"read_array_header_{version[0]}_0")
                    shape, fortran, dtype = read_header(handle)
                    if not dtype.hasobject:
                        order = "F" if fortran else "C"
                        return np.memmap(path, dtype, "r", offset=handle.tell(), shape=shape, order=order)
        with np.load(path, allow_pickle=False) as archive:
            return archive[info.filename.removesuffix(".npy")]
    except ValueError as exc:
        if "pickle" in str(exc) or "Object arrays" in str(exc):
            raise InputError(
                f"array {info.filename} of {path} holds Python objects: save numbers (x) and numbers or text (y)"
            ) from None
        raise InputError(f"cannot read array {info.filename} of {path}: {exc}: save it with numpy.savez") from None


def _check_shapes(x: np.ndarray, y: np.ndarray, where: str) -> None:
    if x.ndim < 2:
        raise InputError(
            f"{where}: x has shape {x.shape}: give one sample per row, e.g. x.reshape(-1, 1) for one feature"
        )
    if x.dtype.kind not in NUMERIC_KINDS:
        raise InputError(f"{where}: x holds {x.dtype} values: descent trains on numbers: convert x to float32")
    if len(x) == 0 or x[:1].size == 0:
        raise InputError(f"{where}: x has shape {x.shape}: give at least one sample with at least one value")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.reshape(-1)
    if y.ndim != 1:
        raise InputError(
            f"{where}: y has shape {y.shape}: give one label per sample "
            "(a class index or name, or a value), e.g. y.argmax(axis=1) for one-hot labels"
        )
    if len(y) != len(x):
        raise InputError(f"{where}: x has {len(x)} samples but y has {len(y)} labels: give one label per sample")


def _check_labels(y: pd.Series, task: str, where: str) -> None:
    if y.isna().all():
        raise InputError(f"{where}: the labels y are all missing: give a label per sample")
    if task == "regression" and not pd.api.types.is_numeric_dtype(y):
        raise InputError(f"{where}: the labels y are text but the task is regression: set data.task=auto")
    if task == "classification" and y.nunique() < 2:
        only = y.dropna().iloc[0]
        raise InputError(
            f"{where}: the labels y have a single class ({getattr(only, 'item', lambda: only)()!r}): "
            "classification needs at least two classes"
        )
