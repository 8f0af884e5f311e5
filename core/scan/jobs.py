"""What a scan has to do, what it has already done, and the files it leaves.

Each video's report is `STEM.csv` then `STEM.json`, each written whole (core.atomic): a
readable JSON means the report is complete, so a rerun skips it, and a run killed at any
moment leaves nothing half-written to mistake for done."""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..atomic import write_text

SUMMARY = "summary.csv"


@dataclass(frozen=True)
class ScanJob:
    index: int          # position in the scan, which orders the summary
    path: str           # as given, so reports name the video the way the user did
    stem: str           # output file stem in the output folder


@dataclass
class Outcome:
    """One video's end: its report texts, or why it failed."""
    job: ScanJob
    report_json: str | None = None
    faces_csv: str | None = None
    error: str | None = None
    video_error: bool = False     # the video itself was unusable (not the models, not a crash)
    attempts: int = 1
    skipped: bool = False         # complete in the output folder before this run

    @property
    def failed(self) -> bool:
        return self.error is not None

    @cached_property
    def report(self) -> dict:
        return json.loads(self.report_json)


def unique_stems(videos: Sequence[Path]) -> list[str]:
    """Output stems: the file's stem, or `parent_stem` where folders of DFDC or FF++ clips
    reuse a name across sub-folders, with the suffix added where that still repeats (a.jpg and
    a.png side by side)."""
    if len(videos) == 1:
        return [videos[0].stem]
    stems = [v.stem for v in videos]
    stems = [v.stem if stems.count(v.stem) == 1 else "_".join(v.with_suffix("").parts[-2:])
             for v in videos]
    return [stem if stems.count(stem) == 1 else f"{stem}_{v.suffix.lstrip('.').lower()}"
            for v, stem in zip(videos, stems)]


def plan(videos: Sequence[Path]) -> list[ScanJob]:
    return [ScanJob(i, str(v), stem) for i, (v, stem) in enumerate(zip(videos, unique_stems(videos)))]


def completed(job: ScanJob, out_dir: Path, annotated: bool = False) -> Outcome | None:
    """The job's report when the output folder holds it whole, for the same video (and, when
    `annotated`, with its annotated video)."""
    json_path, csv_path = out_dir / f"{job.stem}.json", out_dir / f"{job.stem}.csv"
    if not (json_path.is_file() and csv_path.is_file()):
        return None
    try:
        outcome = Outcome(job, report_json=json_path.read_text(), skipped=True, attempts=0)
        same_video = outcome.report["video"]["path"] == job.path
        copy = outcome.report.get("annotated_image") or outcome.report["annotated_video"]
        annotated_there = not annotated or Path(copy).is_file()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return outcome if same_video and annotated_there else None


def write_report(outcome: Outcome, out_dir: Path) -> None:
    """The CSV first, the JSON last: the JSON's presence is what marks the report complete."""
    write_text(out_dir / f"{outcome.job.stem}.csv", outcome.faces_csv)
    write_text(out_dir / f"{outcome.job.stem}.json", outcome.report_json)


def summary_row(outcome: Outcome) -> dict:
    """The summary line of one video or photo, from its report as written (fresh or from a past
    run)."""
    if outcome.failed:
        from ..media.image import is_image_file

        return {"path": outcome.job.path,
                "kind": "image" if is_image_file(outcome.job.path) else "video",
                "verdict": "ERROR", "probability": "", "persons": "", "faces": "", "seconds": "",
                "error": outcome.error}
    report = outcome.report
    verdict = report["verdict"]
    return {"path": outcome.job.path, "kind": report.get("kind", "video"),
            "verdict": verdict["label"],
            "probability": probability_text(verdict["probability"]),
            "persons": len(report["persons"]), "faces": len(report["faces"]),
            "seconds": f"{report['timings']['total']:.2f}", "error": "",
            **{f"p_{name}": probability_text(v["probability"])
               for name, v in report["verdicts"].items()}}


def probability_text(value) -> str:
    """A report's P(fake) as summaries and progress lines print it."""
    return "" if value is None else f"{value:.4f}"


def write_summary(path: Path, outcomes: Sequence[Outcome]) -> None:
    rows = [summary_row(o) for o in sorted(outcomes, key=lambda o: o.job.index)]
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


class ScannedResult:
    """What evaluation reads of an AnalysisResult, rebuilt from a worker's report."""

    def __init__(self, report: dict):
        from ..results import ModelVerdict, scored_views

        self.no_face = bool(report["no_face"])
        self.verdicts = {name: ModelVerdict(**v) for name, v in report["verdicts"].items()}
        faces = report.get("faces") or []
        self.scored_views = scored_views(f.get("views", {}) for f in faces)

    @classmethod
    def of(cls, outcome: Outcome) -> "ScannedResult":
        """The result, or the error the local analysis would have raised."""
        from ..errors import DetectorError, VideoError

        if outcome.failed:
            raise (VideoError if outcome.video_error else DetectorError)(outcome.error)
        return cls(outcome.report)
