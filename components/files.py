"""Read a user's table file as it comes: CSV or TSV in any text encoding and with any usual separator, compressed
or not, or Parquet (one file, or a folder of part files). What was read how is returned beside the rows."""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import lzma
import zipfile
from pathlib import Path
from typing import IO

import pandas as pd

from components.errors import InputError

TEXT_FORMATS = (".csv", ".tsv")
PARQUET_FORMATS = (".parquet", ".pq")
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".zip": "zip", ".xz": "xz"}
# The separators a spreadsheet writes; each may also be named by its word (handy on a command line).
SEPARATORS = {"comma": ",", "semicolon": ";", "tab": "\t", "pipe": "|"}
SEPARATOR_NAMES = {v: k for k, v in SEPARATORS.items()}
BOMS = (  # UTF-32's little-endian mark starts with UTF-16's: look for it first
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# What a binary file given as a CSV most likely is, by its first bytes.
MAGIC = {
    b"PK\x03\x04": "an Excel workbook or a ZIP archive: save it as CSV (Excel: Save As > CSV UTF-8)",
    b"PAR1": "a Parquet file: give it a .parquet name",
    b"\x1f\x8b": "a gzip file: give it a .csv.gz name",
    b"BZh": "a bzip2 file: give it a .csv.bz2 name",
    b"\xd0\xcf\x11\xe0": "an old Excel workbook (.xls): save it as CSV (Excel: Save As > CSV UTF-8)",
}
SAMPLE_BYTES = 1 << 16  # enough lines to tell the encoding and the separator
SNIFF_LINES = 50
FORMATS_HINT = ".csv or .tsv (optionally .gz, .bz2, .zip, .xz), .parquet, or a folder of .parquet files"


def table_format(path: Path) -> tuple[str, str | None]:
    """('csv' | 'tsv' | 'parquet', compression or None) from the name: rows.csv.gz -> ('csv', 'gzip')."""
    suffixes = [s.lower() for s in path.suffixes]
    compression = COMPRESSIONS.get(suffixes[-1]) if suffixes else None
    base = suffixes[-2] if compression and len(suffixes) > 1 else (suffixes[-1] if suffixes else "")
    if path.is_dir():
        return "parquet", None
    if base in TEXT_FORMATS:
        return base[1:], compression
    if base in PARQUET_FORMATS and not compression:
        return "parquet", None
    shown = "".join(suffixes[-2:]) if compression else base
    raise InputError(f"unsupported data format {shown or '(none)'!r} for {path}: use {FORMATS_HINT}")


def table_name(path: Path) -> str:
    """The data set's name: the file name without its format and compression suffixes."""
    name = path.name
    for suffixes in (tuple(COMPRESSIONS), TEXT_FORMATS + PARQUET_FORMATS):
        for suffix in suffixes:
            if name.lower().endswith(suffix) and len(name) > len(suffix):
                name = name[: -len(suffix)]
                break
    return name


def read_table(path: Path, encoding: str | None = None, separator: str | None = None) -> tuple[pd.DataFrame, dict]:
    """The rows of a table file, and how it was read (format, encoding, separator, compression, parts)."""
    kind, compression = table_format(path)
    if kind == "parquet":
        return _read_parquet(path)
    head = _head(path, compression)
    if not head.strip():
        raise InputError(f"data file is empty: {path}: it needs a header row and data rows")
    chosen = _encoding(head, encoding, path)
    text = head.decode(chosen, errors="replace")
    sep = SEPARATORS.get(separator, separator) if separator else ("\t" if kind == "tsv" else _sniff(text, head, path))
    _check_header(text, sep, path)
    try:
        frame = _read_csv(path, compression, chosen, sep)
    except UnicodeDecodeError as exc:
        if encoding or chosen != "utf-8":
            raise InputError(
                f"cannot read {path} as {chosen} text: {exc.reason} at byte {exc.start} of a block: "
                "set data.encoding to the file's encoding (e.g. cp1252, latin-1, utf-16)"
            ) from None
        # UTF-8 for the first lines only: tell the encoding from the whole file and read it again.
        with _open(path, compression) as handle:
            chosen = _detected(handle.read(), path)
        frame = _read_csv(path, compression, chosen, sep)
    reading = {"format": kind, "encoding": chosen, "separator": SEPARATOR_NAMES.get(sep, sep)}
    return frame, reading | ({"compression": compression} if compression else {})


def _open(path: Path, compression: str | None) -> IO[bytes]:
    try:
        if compression == "zip":
            archive = zipfile.ZipFile(path)
            members = [m for m in archive.namelist() if not m.endswith("/") and not m.startswith("__MACOSX/")]
            if len(members) != 1:
                raise InputError(f"{path} holds {len(members)} files: a .zip data file must hold exactly one table")
            return archive.open(members[0])
        opener = {"gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}.get(compression, open)
        return opener(path, "rb")
    except (OSError, zipfile.BadZipFile, EOFError, lzma.LZMAError) as exc:
        raise InputError(f"cannot open {path} as {compression}: {exc}: check the file is complete") from None


def _head(path: Path, compression: str | None) -> bytes:
    try:
        with _open(path, compression) as handle:
            return handle.read(SAMPLE_BYTES)
    except (OSError, EOFError, lzma.LZMAError, zipfile.BadZipFile) as exc:
        raise InputError(f"cannot read {path} as {compression}: {exc}: check the file is complete") from None


def _encoding(head: bytes, configured: str | None, path: Path) -> str:
    if configured:
        try:
            return codecs.lookup(configured).name
        except LookupError:
            raise InputError(
                f"unknown encoding data.encoding={configured!r}: use a Python codec name such as utf-8, cp1252, "
                "latin-1 or utf-16"
            ) from None
    for bom, name in BOMS:
        if head.startswith(bom):
            return name
    _check_text(head, path)
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)  # the sample may end inside a character
        return "utf-8"
    except UnicodeDecodeError:
        return _detected(head, path)


def _check_text(head: bytes, path: Path) -> None:
    what = next((hint for magic, hint in MAGIC.items() if head.startswith(magic)), None)
    zero = head.find(b"\x00")
    if what or zero >= 0:
        why = f"it looks like {what}" if what else f"it holds binary data (a zero byte at offset {zero})"
        raise InputError(f"{path} is not a text CSV file: {why}" + ("" if what else ": export it as CSV"))


def _detected(data: bytes, path: Path) -> str:
    """The encoding charset-normalizer finds; Western European text is read as cp1252 (what Excel saves).

    charset-normalizer cannot tell cp1252 from cp1250 on a few accented words and picks cp1250, which turns
    Spanish and French letters (ñ, è, à) into Czech ones; a Central European file needs data.encoding=cp1250.
    """
    from charset_normalizer import from_bytes

    _check_text(data[:SAMPLE_BYTES], path)
    best = from_bytes(data).best()
    if best is None:
        raise InputError(
            f"{path} is not a text CSV file: no text encoding fits its bytes: export it as CSV (UTF-8), "
            "or set data.encoding if it is text"
        )
    if all("Latin" in alphabet or alphabet == "Control character" for alphabet in best.alphabets):
        try:
            data.decode("cp1252")
            return "cp1252"
        except UnicodeDecodeError:
            pass
    return best.encoding


def _sniff(text: str, head: bytes, path: Path) -> str:
    lines = text.splitlines()
    if len(head) == SAMPLE_BYTES:
        lines = lines[:-1]  # the sample may end inside a line
    try:
        return csv.Sniffer().sniff("\n".join(lines[:SNIFF_LINES]), delimiters="".join(SEPARATORS.values())).delimiter
    except csv.Error:  # one column, or no separator used consistently: read as comma-separated
        return ","


def _check_header(text: str, sep: str, path: Path) -> None:
    # pandas renames a repeated column to "name.1"; the header itself shows the repeat.
    header = next(csv.reader(text.splitlines()[:1], delimiter=sep), [])
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise InputError(f"duplicate column names in {path}: {', '.join(repeated)}: rename them")


def _read_csv(path: Path, compression: str | None, encoding: str, sep: str) -> pd.DataFrame:
    try:
        with _open(path, compression) as handle:
            return pd.read_csv(handle, sep=sep, encoding=encoding)
    except pd.errors.EmptyDataError:
        raise InputError(f"data file is empty: {path}: it needs a header row and data rows") from None
    except (pd.errors.ParserError, OSError, EOFError, lzma.LZMAError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot read {path} as a table: {reason}: check the file is a valid CSV") from None


def _read_parquet(path: Path) -> tuple[pd.DataFrame, dict]:
    """A Parquet file or a folder of part files, releasing Arrow's copy column by column: one copy at the peak."""
    import pyarrow.parquet as pq

    parts = [path]
    if path.is_dir():  # Spark and Arrow leave _SUCCESS and .crc files beside the parts; Arrow skips them too
        parts = [p for p in path.rglob("*") if p.is_file() and not p.name.startswith(("_", "."))]
    if not any(p.name.lower().endswith(PARQUET_FORMATS) for p in parts):
        raise InputError(f"data path is a folder with no .parquet files: {path}: give a {FORMATS_HINT}")
    try:
        # pre_buffer=False: read each column chunk as it is decoded, not the whole file first (a local file needs
        # no read-ahead; a million-row table then peaks at ~1.8x its size instead of ~2.8x).
        table = pq.read_table(path, pre_buffer=False)
    except (OSError, ValueError):
        what = "a file in the folder" if path.is_dir() else "the file"
        what += " is corrupt or not Parquet"
        raise InputError(f"cannot read {path} as parquet: {what}: export it again") from None
    frame = table.to_pandas(self_destruct=True, split_blocks=True)
    del table
    release_unused()
    return frame, {"format": "parquet"} | ({"parts": str(len(parts))} if path.is_dir() else {})


def release_unused() -> None:
    """Give the memory Arrow's allocator keeps after a free back to the system (a Parquet table's columns live in
    it, also as a pandas frame: freeing the frame leaves it with Arrow, and the process as large as before)."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
