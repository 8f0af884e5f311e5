"""A scan from start to end: skip what an earlier run finished, run the rest on an engine,
write each report as it arrives, then the summary in the order the videos were listed."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from .jobs import (SUMMARY, Outcome, ScanJob, completed, probability_text, write_report,
                   write_summary)
from .progress import ScanProgress
from .scanner import ScannerConfig

ENGINES = ("local", "ray")


def make_engine(name: str, config: ScannerConfig, *, address: str | None = None,
                workers: int | None = None, max_attempts: int | None = None):
    if name == "local":
        from .local import LocalEngine

        return LocalEngine(config)
    if name == "ray":
        from .ray_engine import DEFAULT_ATTEMPTS, RayEngine

        return RayEngine(config, address=address, workers=workers,
                         max_attempts=max_attempts or DEFAULT_ATTEMPTS)
    raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")


def scan_to_folder(jobs: Sequence[ScanJob], start_engine: Callable[[], object], out_dir: Path, *,
                   annotated: bool = False, quiet: bool = False, echo: bool = True,
                   on_outcome: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Every job's outcome, in job order. Reports already complete in `out_dir` are kept and
    not redone; the engine is started only if anything is left. `echo`: a line per video
    (its verdict, or its error)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    outcomes = {}
    for job in jobs:
        done = completed(job, out_dir, annotated=annotated)
        if done is not None:
            outcomes[job.index] = done
    todo = [job for job in jobs if job.index not in outcomes]
    progress = ScanProgress(len(jobs), skipped=len(outcomes), disable=quiet or len(jobs) < 2)

    def arrived(outcome: Outcome) -> None:
        if not outcome.failed:
            write_report(outcome, out_dir)
        outcomes[outcome.job.index] = outcome
        progress.update(outcome)
        if echo:
            _echo(progress, outcome)
        if on_outcome is not None:
            on_outcome(outcome)

    try:
        if todo:
            engine = start_engine()
            description = engine.describe()
            if description:
                progress.write(description, error=True)
            try:
                engine.run(todo, arrived)
            finally:
                engine.close()
    finally:
        progress.close()
        # Also after an interruption: the summary lists what is done so far.
        write_summary(out_dir / SUMMARY, list(outcomes.values()))
    return [outcomes[job.index] for job in jobs]


def scan_all(jobs: Sequence[ScanJob], engine, *, desc: str = "videos",
             quiet: bool = False) -> list[Outcome]:
    """Every job's outcome, in job order, nothing written (evaluation)."""
    outcomes = {}
    progress = ScanProgress(len(jobs), skipped=0, desc=desc, disable=quiet)

    def arrived(outcome: Outcome) -> None:
        outcomes[outcome.job.index] = outcome
        progress.update(outcome)

    try:
        engine.run(jobs, arrived)
    finally:
        progress.close()
    return [outcomes[job.index] for job in jobs]


def _echo(progress: ScanProgress, outcome: Outcome) -> None:
    path = outcome.job.path
    if outcome.failed:
        progress.write(f"error: {path}: {outcome.error}", error=True)
        return
    report = outcome.report
    for warning in report.get("warnings", []):
        progress.write(f"warning: {path}: {warning}", error=True)
    verdict = report["verdict"]
    progress.write(f"{path}: {verdict['label']} {probability_text(verdict['probability'])} "
                   f"({len(report['persons'])} persons, "
                   f"{len(report['faces'])} faces, {report['timings']['total']:.1f} s)")
