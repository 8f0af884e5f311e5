"""Video-level evaluation on a labelled set: a CSV with `path,label` or a DFDC folder."""
from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

from .calibration import LOG_LOSS_CLIP
from .errors import LabelsError, VideoError
from .results import ENSEMBLE

NO_FACE_SCORE = 0.5        # a video with no face says nothing either way
_LABEL_VALUES = {"REAL": 0, "FAKE": 1, "0": 0, "1": 1}


@dataclass
class LabelledVideo:
    path: Path
    label: int                      # 1 = FAKE
    extra: dict = field(default_factory=dict)


def load_labels(source: str | Path, split: str | None = None,
                root: Path | None = None) -> list[LabelledVideo]:
    """Read a labels CSV (paths relative to it) or a DFDC folder with metadata.json.
    `split` keeps only rows whose `split` column (or DFDC `split` field) matches.
    `root` (core.data_root): every listed video must lie inside it, after resolving `..` and
    symbolic links, and messages name paths relative to it."""
    from .data_root import PathNotAllowedError, inside, shown

    source = Path(source)
    if root is not None and not inside(root, source):
        raise PathNotAllowedError(f"{shown(root, source)} is outside the data root")
    name = shown(root, source) if root is not None else str(source)
    if source.is_dir():
        metadata = source / "metadata.json"
        if not metadata.is_file():
            raise LabelsError(f"{name} is a folder without metadata.json (expected a DFDC folder)")
        try:
            entries = json.loads(metadata.read_text())
        except json.JSONDecodeError as error:
            raise LabelsError(f"{name}/metadata.json is not valid JSON: {error}") from None
        rows = [{"path": name, **values} for name, values in entries.items()]
        base = source
    elif source.is_file():
        with source.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
                raise LabelsError(f"{name} needs a header with 'path' and 'label' columns")
            rows = list(reader)
        base = source.parent
    else:
        raise LabelsError(f"{name} does not exist")

    videos = []
    for number, row in enumerate(rows, start=1):
        if split is not None and row.get("split") != split:
            continue
        label = _LABEL_VALUES.get(str(row.get("label", "")).strip().upper())
        if label is None:
            raise LabelsError(f"{name}: row {number} has label {row.get('label')!r}; "
                              "use REAL/FAKE or 0/1")
        extra = {k: v for k, v in row.items() if k not in ("path", "label")}
        path = base / str(row.get("path") or "")
        if root is not None and not inside(root, path):
            raise PathNotAllowedError(f"{name}: row {number} names {row.get('path')}, which is "
                                      "outside the data root")
        videos.append(LabelledVideo(path, label, extra))
    if not videos:
        raise LabelsError(f"{name} lists no videos" + (f" in split {split!r}" if split else ""))
    missing = [v.path for v in videos if not v.path.is_file()]
    if missing:
        example = shown(root, missing[0]) if root is not None else missing[0]
        raise LabelsError(f"{len(missing)} listed videos are missing, e.g. {example}")
    return videos


def video_metrics(labels: Sequence[int], scores: Sequence[float]) -> dict:
    """AUC, clipped log loss and accuracy at 0.5 of calibrated probabilities (0.5 is each
    model's own threshold after calibration)."""
    y = np.asarray(labels, dtype=int)
    p = np.asarray(scores, dtype=float)
    auc = float(roc_auc_score(y, p)) if len(set(y.tolist())) == 2 else float("nan")
    clipped = np.clip(p, *LOG_LOSS_CLIP)
    return {
        "auc": auc,
        "log_loss": float(log_loss(y, clipped, labels=[0, 1])),
        "accuracy": float(accuracy_score(y, (p >= 0.5).astype(int))),
    }


def evaluate(
    videos: Sequence[LabelledVideo],
    analyze: Callable[[Path], "object"],
    model_names: Sequence[str],
    on_video: Callable[[int, int, LabelledVideo], None] | None = None,
) -> dict:
    """Run `analyze` (path -> AnalysisResult) on every video; returns the evaluation schema:
    {"models": {NAME: {auc, log_loss, accuracy, videos, no_face}}, "videos": [...], "seconds"}."""
    started = time.perf_counter()
    names = [*model_names, ENSEMBLE]
    rows = []
    no_face = 0
    for number, video in enumerate(videos):
        try:
            result = analyze(video.path)
            found = not result.no_face
            scores = {n: (result.verdicts[n].probability if found else NO_FACE_SCORE) for n in names}
        except VideoError as error:
            # An unreadable video is reported and scored like a video without a face.
            print(f"warning: {video.path}: {error}")
            found, scores = False, {n: NO_FACE_SCORE for n in names}
        no_face += not found
        rows.append({"path": str(video.path), "label": video.label, "scores": scores,
                     **({"extra": video.extra} if video.extra else {})})
        if on_video is not None:
            on_video(number + 1, len(videos), video)
    labels = [r["label"] for r in rows]
    models = {}
    for name in names:
        metrics = video_metrics(labels, [r["scores"][name] for r in rows])
        models[name] = {**metrics, "videos": len(rows), "no_face": no_face}
    report = {
        "models": models,
        "videos": [{k: r[k] for k in ("path", "label", "scores")} for r in rows],
        "seconds": time.perf_counter() - started,
    }
    report["_subsets"] = _subsets(rows, names)
    return report


def _subsets(rows: list[dict], names: Sequence[str]) -> dict:
    """Metrics per dataset (e.g. FF++ vs DFDC) when the labels say which; for printing only."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        dataset = row.get("extra", {}).get("dataset")
        if dataset:
            groups.setdefault(dataset, []).append(row)
    if len(groups) < 2:
        return {}
    return {
        dataset: {n: {**video_metrics([r["label"] for r in members],
                                      [r["scores"][n] for r in members]),
                      "videos": len(members)} for n in names}
        for dataset, members in groups.items()
    }


def auc_intervals(report: dict) -> dict[str, tuple[float, float] | None]:
    """Bootstrap 95 % interval of each model's video AUC, from the report's per-video scores."""
    from .ensemble import bootstrap_auc_interval

    labels = [v["label"] for v in report["videos"]]
    return {name: bootstrap_auc_interval(labels, [v["scores"][name] for v in report["videos"]])
            for name in report["models"]}


def format_report(report: dict, band: float | None = None) -> str:
    """The table printed by `evaluate`: AUC with its bootstrap 95 % interval, log loss,
    accuracy and, given the UNCERTAIN band, the share of videos decided and the accuracy on them."""
    from .ensemble import band_metrics
    from .settings import AnalysisSettings

    def fmt(value: float) -> str:
        return "  n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"

    intervals = auc_intervals(report)
    labels = [v["label"] for v in report["videos"]]
    lines = [f"{'model':<28} {'AUC':>6} {'95% interval':>14} {'logloss':>8} {'acc':>6} "
             f"{'decided':>8} {'acc_dec':>8} {'videos':>7} {'no_face':>8}"]
    for name, m in report["models"].items():
        low_high = intervals.get(name)
        interval = f"[{low_high[0]:.3f}, {low_high[1]:.3f}]" if low_high else "n/a"
        decided = band_metrics(labels, [v["scores"][name] for v in report["videos"]],
                               AnalysisSettings().band if band is None else band)
        lines.append(f"{name:<28} {fmt(m['auc']):>6} {interval:>14} {fmt(m['log_loss']):>8} "
                     f"{fmt(m['accuracy']):>6} {fmt(decided['decided_share']):>8} "
                     f"{fmt(decided['decided_accuracy']):>8} {m['videos']:>7} {m['no_face']:>8}")
    for dataset, per_model in report.get("_subsets", {}).items():
        lines.append(f"-- {dataset} only")
        for name, m in per_model.items():
            lines.append(f"{name:<28} {fmt(m['auc']):>6} {fmt(m['log_loss']):>8} "
                         f"{fmt(m['accuracy']):>6} {m['videos']:>7}")
    lines.append(f"{report['seconds']:.1f} s")
    return "\n".join(lines)


def schema_only(report: dict) -> dict:
    """The report as written to disk: exactly the documented schema, NaN AUC as null."""
    def clean(value):
        return None if isinstance(value, float) and math.isnan(value) else value

    return {
        "models": {n: {k: clean(v) for k, v in m.items()} for n, m in report["models"].items()},
        "videos": report["videos"],
        "seconds": report["seconds"],
    }

