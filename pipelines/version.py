"""The version of the code that runs: a hash of descent's Python sources and conf/, the same with or without git.

Documentation, images and tests are not code that runs: editing them keeps a study resuming. Any edit to a module,
tracked, untracked or uncommitted, or to a config file, makes another version: runs of other code are never reused.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("components", "pipelines", "examples")  # the Python that runs (examples: builders a config may name)
CONFIG = "conf"


@functools.cache  # the code a process runs is the code it imported: hash it once per process
def code_version(root: Path = ROOT) -> str:
    """A short hash of the paths and contents of every `.py` file under SOURCES and every file under conf/."""
    digest = hashlib.sha256()
    for path in sorted(_files(root), key=lambda p: p.relative_to(root).as_posix()):
        for part in (path.relative_to(root).as_posix().encode(), path.read_bytes()):
            digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()[:16]


def _files(root: Path) -> list[Path]:
    found = [p for folder in SOURCES for p in (root / folder).rglob("*.py")]
    found += [p for p in (root / CONFIG).rglob("*") if p.is_file()]
    return [p for p in found if not _hidden(p.relative_to(root))]


def _hidden(path: Path) -> bool:
    return any(part.startswith(".") or part == "__pycache__" for part in path.parts)
