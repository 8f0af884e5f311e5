"""The scan's progress bar: videos done (and skipped as already done), failed, rate and ETA."""
from __future__ import annotations

import sys

from tqdm import tqdm

from .jobs import Outcome


class ScanProgress:
    def __init__(self, total: int, skipped: int, desc: str = "videos", disable: bool = False):
        self.failed = 0
        self.skipped = skipped
        # The rate and ETA count this run's work only: skipped reports cost nothing.
        self.bar = tqdm(total=total - skipped, desc=desc, unit="video", disable=disable,
                        dynamic_ncols=True)
        self._postfix()

    def _postfix(self) -> None:
        self.bar.set_postfix(failed=self.failed, skipped=self.skipped, refresh=False)

    def update(self, outcome: Outcome) -> None:
        self.failed += outcome.failed
        self._postfix()
        self.bar.update(1)

    def write(self, line: str, error: bool = False) -> None:
        tqdm.write(line, file=sys.stderr if error else sys.stdout)

    def close(self) -> None:
        self.bar.close()
