"""The local engine: one scanner in this process, one video after another."""
from __future__ import annotations

from collections.abc import Callable, Sequence

from .jobs import Outcome, ScanJob
from .scanner import ScannerConfig, VideoScanner


class LocalEngine:
    name = "local"

    def __init__(self, config: ScannerConfig):
        self.scanner = VideoScanner(config)

    def describe(self) -> None:
        return None     # the default engine adds no line (bad input keeps its one-line error)

    @property
    def model_names(self) -> list[str]:
        return self.scanner.model_names

    def run(self, jobs: Sequence[ScanJob], on_outcome: Callable[[Outcome], None]) -> None:
        for job in jobs:
            on_outcome(self.scanner.scan(job))

    def close(self) -> None:
        pass
