"""Video-level evaluation on a labelled set: a CSV with `path,label` or a DFDC folder."""
from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

from ..errors import LabelsError, VideoError
from ..results import ENSEMBLE
from ..verdicts.calibration import LOG_LOSS_CLIP

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
    band: float | None = None,
) -> dict:
    """Run `analyze` (path -> AnalysisResult) on every video; returns the evaluation schema:
    {"models": {NAME: core.metrics.verdict_metrics + no_face}, "datasets": {DATASET: {NAME:
    metrics}} (when the labels name two or more datasets), "videos": [...], "band", "seconds"}.
    `band`: the UNCERTAIN band the verdicts used (default: the app's)."""
    from ..settings import AnalysisSettings

    band = AnalysisSettings().band if band is None else band
    started = time.perf_counter()
    names = [*model_names, ENSEMBLE]
    rows = []
    no_face = 0
    views: dict[str, list[str]] = {}      # the views each model scored (settings.views_on)
    for number, video in enumerate(videos):
        try:
            result = analyze(video.path)
            found = not result.no_face
            if found and not views:
                views = result.scored_views
            scores = {n: (result.verdicts[n].probability if found else NO_FACE_SCORE) for n in names}
            calls = {n: result.verdicts[n].label for n in names}
        except VideoError as error:
            # An unreadable video is reported and scored like a video without a face.
            print(f"warning: {video.path}: {error}")
            found, scores = False, {n: NO_FACE_SCORE for n in names}
            calls = {n: "NO_FACE" for n in names}
        no_face += not found
        rows.append({"path": str(video.path), "label": video.label, "scores": scores,
                     "calls": calls,
                     **({"dataset": video.extra["dataset"]} if video.extra.get("dataset") else {})})
        if on_video is not None:
            on_video(number + 1, len(videos), video)
    report = {"videos": rows, "band": band, "seconds": time.perf_counter() - started}
    if views:
        report["views"] = views
    report.update(summarise(rows, names, band))
    for metrics in report["models"].values():
        metrics["no_face"] = no_face
    return report


def summarise(rows: Sequence[dict], names: Sequence[str], band: float) -> dict:
    """{"models": pooled metrics per name, "datasets": the same per dataset} from per-video rows
    ({"label", "scores": {name: P}, optional "calls": {name: verdict label}, optional "dataset"}):
    what evaluate reports and what the robustness benchmark reports per transform."""
    from .metrics import verdict_metrics

    def measure(members: Sequence[dict]) -> dict:
        labels = [r["label"] for r in members]
        with_calls = all("calls" in r for r in members)
        return {n: verdict_metrics(labels, [r["scores"][n] for r in members], band,
                                   calls=[r["calls"][n] for r in members] if with_calls else None)
                for n in names}

    groups: dict[str, list[dict]] = {}
    for row in rows:
        if row.get("dataset"):
            groups.setdefault(row["dataset"], []).append(row)
    return {"models": measure(rows),
            "datasets": ({d: measure(m) for d, m in sorted(groups.items())}
                         if len(groups) >= 2 else {})}


def format_report(report: dict) -> str:
    """The table printed by `evaluate`: per model, pooled then per dataset, the AUC with its
    bootstrap 95 % interval, log loss, ECE, real clips called FAKE and fake clips called REAL
    (outside the UNCERTAIN band), the share decided and the accuracy on those."""
    from .metrics import count_text
    from .metrics import number_text as fmt

    def line(label: str, m: dict) -> str:
        interval = m.get("auc_ci95")
        interval = f"[{interval[0]:.2f}, {interval[1]:.2f}]" if interval else "n/a"
        return (f"{label:<36} {fmt(m['auc']):>6} {interval:>12} {fmt(m['log_loss']):>8} "
                f"{fmt(m['ece']):>6} {count_text(m, 'real_called_fake'):>10} "
                f"{count_text(m, 'fake_called_real'):>10} {fmt(m['decided_share']):>8} "
                f"{fmt(m['decided_accuracy']):>8}")

    lines = [f"{'model':<36} {'AUC':>6} {'95% interval':>12} {'logloss':>8} {'ECE':>6} "
             f"{'real→FAKE':>10} {'fake→REAL':>10} {'decided':>8} {'acc_dec':>8}"]
    for name, m in report["models"].items():
        lines.append(line(name, m))
    for dataset, per_model in report.get("datasets", {}).items():
        lines.append(f"-- {dataset} only")
        for name, m in per_model.items():
            lines.append(line(name, m))
    no_face = next(iter(report["models"].values())).get("no_face", 0)
    lines.append(f"{len(report['videos'])} videos ({no_face} without a face), UNCERTAIN band "
                 f"{report['band']:g}, {report['seconds']:.1f} s")
    return "\n".join(lines)


def schema_only(report: dict) -> dict:
    """The report as written to disk: exactly the documented schema, NaN as null."""
    from .metrics import clean

    return clean({k: report[k] for k in ("models", "datasets", "videos", "band", "seconds",
                                         "views", "views_per_face")
                  if k in report})
