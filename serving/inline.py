"""Analyses in the server process itself, as the app ran before it had workers: the baseline
that benchmarks/bench_load.py compares the workers with, and a way to debug an analysis in one
process. The server's own cores and GIL are then the analyses' too."""
from __future__ import annotations

import os
import threading

from .analyst import Analyst
from .protocol import AnalysisRequest
from .uploads import StoredAnalysis


class InlineWorkers:
    name = "inline"

    def __init__(self, models_dir: str | None = None, *, threads: int = 0):
        self.analyst = Analyst(models_dir)
        self.threads = threads
        self._lock = threading.Lock()       # one Analyst: one analysis at a time
        self._limited = False

    def _limit_threads_once(self) -> None:
        if not self._limited:
            from core.threads import limit_threads

            # One core (of two) stays the server's, as before the workers existed.
            limit_threads(self.threads or max(1, (os.cpu_count() or 2) - 1))
            self._limited = True

    def analyze(self, request: AnalysisRequest, progress=None) -> StoredAnalysis:
        with self._lock:
            self._limit_threads_once()
            return self.analyst.analyze_entry(request, progress)

    def report(self, request: AnalysisRequest):
        with self._lock:
            self._limit_threads_once()
            return self.analyst.analyze_in_place(request)

    def gradcam(self, model: str, crops: list) -> list:
        with self._lock:
            self._limit_threads_once()
            return self.analyst.gradcam(model, crops)

    def live_frame(self, settings: dict, models: tuple[str, ...], ensemble: str, frame):
        with self._lock:
            self._limit_threads_once()
            return self.analyst.live_frame(settings, models, ensemble, frame)

    def pids(self) -> list[int]:
        return [os.getpid()]

    def describe(self) -> str:
        return "in the server process"

    def close(self) -> None:
        pass
