"""Which server files a browser may name: none, unless the operator sets a data root.

The app runs for a team; a visitor must not read the server's files by typing a path. Evaluating
on a labelled set therefore stays off until `DEEPFAKE_DATA_ROOT` names a folder, and then only
CSVs, DFDC folders and videos under that folder are read, judged after resolving `..` and
symbolic links, so neither a relative escape nor a link pointing out gets through. Messages name
paths relative to the root, never the server's own folders."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import DetectorError

DATA_ROOT_ENV = "DEEPFAKE_DATA_ROOT"


class PathNotAllowedError(DetectorError):
    """A path outside the data root, or any server path while no data root is set."""


def data_root(environ=None) -> Path | None:
    """The resolved data root folder, or None when the operator has not set one (or it is not a
    folder: a typo must not open the whole disk)."""
    value = (environ if environ is not None else os.environ).get(DATA_ROOT_ENV, "").strip()
    if not value:
        return None
    root = Path(value).expanduser().resolve()
    return root if root.is_dir() else None


def inside(root: Path, path: Path) -> bool:
    """Whether `path`, with every symbolic link and `..` resolved, lies within `root`."""
    return Path(path).resolve().is_relative_to(Path(root).resolve())


def resolve_under(root: Path | None, user_path: str) -> Path:
    """The file or folder a visitor named, relative to the data root (an absolute path must also
    lie inside it). Raises PathNotAllowedError with a one-line reason otherwise."""
    if root is None:
        raise PathNotAllowedError(
            f"reading files on the server is off; the operator enables it by setting "
            f"{DATA_ROOT_ENV} to a folder of labelled videos")
    text = user_path.strip()
    if not text:
        raise PathNotAllowedError("no path given")
    if "\x00" in text:
        raise PathNotAllowedError("a path cannot contain a NUL character")
    candidate = Path(text) if Path(text).is_absolute() else root / text
    if not inside(root, candidate):
        raise PathNotAllowedError(f"{text} is outside the data root; only files under it are read")
    return candidate.resolve()


def shown(root: Path | None, path: Path) -> str:
    """A path as a visitor may see it: relative to the data root."""
    if root is not None:
        try:
            return str(Path(path).resolve().relative_to(root))
        except ValueError:
            pass
    return Path(path).name
