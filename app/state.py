"""What the app keeps per browser session, as plain Python (no Streamlit import): the sidebar's
settings, the analyses already done (keyed by file content + settings + models, so moving between
pages never recomputes; the upload and its stored analysis are serving.uploads', as the worker
makes them), and the server's one line for analyses."""
from __future__ import annotations

import itertools
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager

from core.errors import VideoError
from core.settings import AnalysisSettings
# The pages' names for an upload and its analysis (made by the worker, kept here).
from serving.uploads import (StoredAnalysis, Upload, analyze_upload,  # noqa: F401
                             content_hash, result_key, safe_file_name)

SETTINGS_KEY = "analysis_settings"
MODELS_KEY = "selected_models"
ENSEMBLE_KEY = "ensemble_mode"        # "fitted" (models/ensemble.json) or "mean"
STORE_KEY = "analyses"
UPLOAD_KEY = "current_upload"

VIDEO_TYPES = ("mp4", "mov", "avi", "mkv", "webm")
PHOTO_TYPES = ("jpg", "jpeg", "png", "webp", "bmp")
# Each stored analysis holds its gallery images (~3 MB a still); a few per session is plenty.
MAX_STORED_ANALYSES = 3


class UploadTooLargeError(VideoError):
    pass


def session_ensemble_mode(state: MutableMapping) -> str:
    return state.get(ENSEMBLE_KEY) or "fitted"


class ResultStore:
    """Analyses of one session, most recent last, at most `capacity` of them. `current` is the
    one every page shows."""

    def __init__(self, capacity: int = MAX_STORED_ANALYSES):
        self.capacity = capacity
        self._entries: OrderedDict[str, StoredAnalysis] = OrderedDict()
        self.current_key: str | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> StoredAnalysis | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            self.current_key = key
        return entry

    def put(self, entry: StoredAnalysis) -> None:
        self._entries[entry.key] = entry
        self._entries.move_to_end(entry.key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        self.current_key = entry.key

    @property
    def current(self) -> StoredAnalysis | None:
        return self._entries.get(self.current_key) if self.current_key else None

    def clear_current(self) -> None:
        self.current_key = None


def result_store(state: MutableMapping) -> ResultStore:
    if STORE_KEY not in state:
        state[STORE_KEY] = ResultStore()
    return state[STORE_KEY]


def session_settings(state: MutableMapping) -> AnalysisSettings:
    return state.get(SETTINGS_KEY) or AnalysisSettings()


def check_upload_size(name: str, size_bytes: int, limit_mb: int) -> None:
    if size_bytes > limit_mb * 1024 * 1024:
        raise UploadTooLargeError(
            f"{name} is {size_bytes / 1024 / 1024:.1f} MB; the limit is {limit_mb} MB")


class AnalysisQueue:
    """First come, first served turns for analyses, shared by every browser session of a server.

    Two cores do not get faster by running four analyses at once: they interleave, every person
    waits for the slowest, and the server has no CPU left to even send a page to a newcomer. So
    `slots` analyses run at a time, the rest wait in line and are told their place in it."""

    def __init__(self, slots: int = 1):
        if slots < 1:
            raise ValueError("an analysis queue needs at least one slot")
        self.slots = slots
        self._changed = threading.Condition()
        self._waiting: deque[int] = deque()
        self._running: set[int] = set()
        self._numbers = itertools.count(1)

    def _admit(self) -> None:
        while self._waiting and len(self._running) < self.slots:
            self._running.add(self._waiting.popleft())
        self._changed.notify_all()

    def join(self) -> int:
        with self._changed:
            ticket = next(self._numbers)
            self._waiting.append(ticket)
            self._admit()
            return ticket

    def position(self, ticket: int) -> int:
        """0 while the ticket's analysis may run, else its 1-based place among those waiting."""
        with self._changed:
            if ticket in self._running:
                return 0
            return self._waiting.index(ticket) + 1 if ticket in self._waiting else 0

    def wait(self, ticket: int, timeout: float) -> bool:
        """Whether the ticket's turn has come, waiting at most `timeout` seconds for it."""
        with self._changed:
            return self._changed.wait_for(lambda: ticket in self._running, timeout=timeout)

    def leave(self, ticket: int) -> None:
        with self._changed:
            self._running.discard(ticket)
            if ticket in self._waiting:
                self._waiting.remove(ticket)
            self._admit()

    @property
    def waiting(self) -> int:
        with self._changed:
            return len(self._waiting)

    @contextmanager
    def turn(self, on_wait: Callable[[int], None] | None = None,
             poll_seconds: float = 0.5) -> Iterator[None]:
        """Hold a slot for the body; until one is free, call on_wait(place in line) at once and
        then every poll_seconds. Leaving the line (an exception, a closed browser tab stopping the
        script) frees the place for the next person."""
        ticket = self.join()
        try:
            while (place := self.position(ticket)) > 0:
                if on_wait is not None:
                    on_wait(place)
                self.wait(ticket, poll_seconds)
            yield
        finally:
            self.leave(ticket)
