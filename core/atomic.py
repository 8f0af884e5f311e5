"""Files that appear whole or not at all: written beside their destination under a hidden
temporary name, renamed over it on success, removed on any failure; and the one folder outside
git where derived files are cached."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


CACHE_ENV = "DEEPFAKE_CACHE"


def cache_home() -> Path:
    """$DEEPFAKE_CACHE, else ~/.cache/deepfake-detector: what can be made again, never committed."""
    base = os.environ.get(CACHE_ENV)
    return Path(base) if base else Path.home() / ".cache" / "deepfake-detector"


@contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yields a temporary path in the destination's folder; the caller writes it, and it is
    renamed to `path` when the block ends without an error. `suffix` keeps writers that choose
    a format by extension (Keras, PyAV) working."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.",
                               suffix=suffix if suffix is not None else path.suffix or ".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))
