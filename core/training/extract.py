"""Training faces from labelled videos, found exactly as inference finds them.

Each video: frames sampled evenly (core.video), MTCNN (core.faces), persons linked (core.tracking);
only tracked faces are kept, at most N per video spread over the clip and over every person, cut
with square_crop at the inference margin and saved as lossless PNG. Per video an index part is
written atomically when it is done, so an interrupted run resumes where it stopped; the parts are
merged into DIR/index.csv at the end.

Layout of DIR:
    extract.json            the settings the faces were cut with (a rerun must match them)
    faces/<video-id>/*.png  the crops
    parts/<video-id>.csv    one video's index rows (the marker that the video is done)
    parts/<video-id>.failed a video that could not be decoded (its error message)
    index.csv               every part, in label order
    failed.csv              the videos that failed, with their errors
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import multiprocessing
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .. import atomic
from ..errors import VideoError
from ..faces.detector import KEYPOINT_NAMES, Detection, FaceDetector, square_crop
from ..settings import AnalysisSettings

NATIVE_CROP_CAP = 384      # --crop-size 0 keeps native resolution up to this side
MIN_AUTO_FRAMES = 16       # enough samples for tracking to tell persons from strays

_KEYPOINT_COLUMNS = [f"{name}_{axis}" for name in KEYPOINT_NAMES for axis in ("x", "y")]
INDEX_COLUMNS = ["file", "video_id", "video", "label", "group", "split", "dataset", "method",
                 "frame", "time", "person", "x1", "y1", "x2", "y2", "confidence", "crop_size",
                 "margin", *_KEYPOINT_COLUMNS]
FAILED_COLUMNS = ["video_id", "video", "error"]


@dataclass(frozen=True)
class ExtractSettings:
    real_faces: int = 10            # the origin project's balance: more faces per real video ...
    fake_faces: int = 3             # ... than per fake, as DFDC has several fakes per real
    crop_size: int = 320            # saved side; 0 = native square side, capped at 384
    margin: float = AnalysisSettings.margin
    frames: int = 0                 # frames sampled per video; 0 = max(faces wanted, 16)
    min_confidence: float = AnalysisSettings.min_confidence
    detect_long_side: int = AnalysisSettings.detect_long_side
    min_face_size: int = AnalysisSettings.min_face_size

    def __post_init__(self):
        if self.real_faces < 1 or self.fake_faces < 1:
            raise ValueError("faces per video must be at least 1")
        if self.crop_size < 0:
            raise ValueError("crop size must be 0 (native) or positive")
        if self.margin < 0:
            raise ValueError("margin must not be negative")
        if self.frames < 0:
            raise ValueError("frames must be 0 (auto) or positive")

    def faces_for(self, label: int) -> int:
        return self.fake_faces if label == 1 else self.real_faces

    def frames_for(self, label: int) -> int:
        return self.frames or max(self.faces_for(label), MIN_AUTO_FRAMES)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class VideoTask:
    video_id: str
    path: str
    label: int
    extra: dict = field(default_factory=dict)


@dataclass
class ExtractReport:
    videos: int = 0            # labelled videos
    processed: int = 0         # extracted in this run
    skipped: int = 0           # already done (or failed before) in an earlier run
    failed: list[tuple[str, str]] = field(default_factory=list)   # (video, error), this run
    faces: int = 0             # rows in index.csv
    seconds: float = 0.0


def video_id(path: str | Path, base: str | Path) -> str:
    """A file-system-safe id, unique per video even where file names repeat across folders:
    the file stem plus a short hash of the path relative to the labels' folder."""
    path, base = Path(path), Path(base)
    try:
        relative = path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        relative = path.resolve().as_posix()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem)[:60] or "video"
    return f"{stem}-{hashlib.sha1(relative.encode('utf-8')).hexdigest()[:8]}"


def crop_geometry(box, margin: float) -> tuple[int, int, int]:
    """(left, top, side) of the square square_crop cuts around `box`, in frame pixels."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    side = max(1, int(round(max(x2 - x1, y2 - y1) * (1.0 + 2.0 * margin))))
    left = int(round((x1 + x2) / 2.0 - side / 2.0))
    top = int(round((y1 + y2) / 2.0 - side / 2.0))
    return left, top, side


def crop_face(image: np.ndarray, detection: Detection, margin: float, crop_size: int
              ) -> tuple[np.ndarray, dict[str, tuple[float, float]]]:
    """The face crop (as inference cuts it) and the detection's keypoints in crop pixels."""
    left, top, side = crop_geometry(detection.box, margin)
    size = crop_size or min(side, NATIVE_CROP_CAP)
    crop = square_crop(image, detection.box, margin=margin, size=size)
    scale = size / side
    # Pixel centres: x_crop + 0.5 = (x_frame - left + 0.5) * scale, as cv2.resize maps them.
    keypoints = {name: ((x - left + 0.5) * scale - 0.5, (y - top + 0.5) * scale - 0.5)
                 for name, (x, y) in detection.keypoints.items()}
    return crop, keypoints


def select_faces(tracks, limit: int) -> list[tuple[int, int, Detection]]:
    """At most `limit` (person, frame_index, detection), shared out over every person as evenly as
    their detections allow, each person's picks spread evenly over the frames it was seen in."""
    persons = [(track.id, sorted(track.detections.items())) for track in tracks]
    quota = [0] * len(persons)
    remaining = limit
    while remaining > 0 and any(q < len(d) for q, (_, d) in zip(quota, persons)):
        for i, (_, detections) in enumerate(persons):
            if remaining and quota[i] < len(detections):
                quota[i] += 1
                remaining -= 1
    chosen = []
    for (person, detections), count in zip(persons, quota):
        if not count:
            continue
        picks = np.unique(np.round(np.linspace(0, len(detections) - 1, count)).astype(int))
        chosen += [(person, detections[p][0], detections[p][1]) for p in picks]
    return sorted(chosen, key=lambda item: (item[1], item[0]))


def _group_of(task: VideoTask) -> str:
    """Videos of one source identity share a group, so a split by group never leaks a face:
    the labels' own group column, else DFDC's `original` (a fake's source real video, named by
    its file stem as the real video's own row is), else the video alone."""
    if task.extra.get("group"):
        return str(task.extra["group"])
    if "original" in task.extra:
        source = task.extra.get("original") or Path(task.path).name
        return Path(str(source)).stem
    return task.video_id


def _csv_text(rows: list[dict], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _write_png(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")


def extract_video(task: VideoTask, out_dir: Path, detector: FaceDetector,
                  settings: ExtractSettings) -> list[dict]:
    """Crop and save one video's faces; returns its index rows (it writes no index itself).
    Raises a VideoError when the video cannot be decoded."""
    from ..faces.tracking import link_tracks
    from ..media.video import probe, sample_frames

    info = probe(task.path)
    frames: dict[int, object] = {}
    detections_per_frame = []
    for frame in sample_frames(task.path, settings.frames_for(task.label), info=info):
        detections = detector.detect(frame.image)
        detections_per_frame.append((frame.index, detections))
        if detections:
            frames[frame.index] = frame
    tracks = link_tracks(detections_per_frame)
    chosen = select_faces(tracks, settings.faces_for(task.label))

    faces_dir = out_dir / "faces" / task.video_id
    # Crops left by an interrupted earlier attempt may not be the ones chosen now.
    shutil.rmtree(faces_dir, ignore_errors=True)
    faces_dir.mkdir(parents=True, exist_ok=True)
    common = {
        "video_id": task.video_id, "video": task.path, "label": task.label, "group": _group_of(task),
        "split": task.extra.get("split") or "", "dataset": task.extra.get("dataset") or "",
        "method": task.extra.get("method") or "", "margin": settings.margin,
    }
    rows = []
    for person, frame_index, detection in chosen:
        frame = frames[frame_index]
        crop, keypoints = crop_face(frame.image, detection, settings.margin, settings.crop_size)
        name = f"f{frame_index:06d}_p{person}.png"
        _write_png(faces_dir / name, crop)
        row = {**common, "file": f"faces/{task.video_id}/{name}", "frame": frame_index,
               "time": round(float(frame.time), 4), "person": person,
               "confidence": round(float(detection.confidence), 5), "crop_size": crop.shape[0]}
        row.update({k: round(float(v), 2) for k, v in zip(("x1", "y1", "x2", "y2"), detection.box)})
        for name_, (x, y) in keypoints.items():
            row[f"{name_}_x"], row[f"{name_}_y"] = round(float(x), 2), round(float(y), 2)
        rows.append(row)
    return rows


# --- worker processes -------------------------------------------------------------------------

_worker_state: dict = {}


def _init_worker(settings: ExtractSettings, out_dir: str, threads: int) -> None:
    # Each process gets its share of the cores (in-process use keeps what it has).
    from ..threads import limit_threads

    limit_threads(threads, inter=1, opencv=1)
    _worker_state["settings"] = settings
    _worker_state["out_dir"] = Path(out_dir)
    _worker_state["detector"] = FaceDetector(
        min_confidence=settings.min_confidence, detect_long_side=settings.detect_long_side,
        min_face_size=settings.min_face_size)


def _run_task(task: VideoTask) -> tuple[str, str, int, str]:
    """(video_id, "done" | "failed", faces, error). Writes the video's part or failure marker."""
    out_dir: Path = _worker_state["out_dir"]
    parts = out_dir / "parts"
    try:
        rows = extract_video(task, out_dir, _worker_state["detector"], _worker_state["settings"])
    except Exception as error:  # noqa: BLE001 - one bad file must not end a long extraction
        message = str(error).splitlines()[0] if str(error) else ""
        if not isinstance(error, VideoError):
            message = f"{type(error).__name__}: {message}"
        atomic.write_text(parts / f"{task.video_id}.failed", f"{task.path}\t{message}\n")
        return task.video_id, "failed", 0, message
    atomic.write_text(parts / f"{task.video_id}.csv", _csv_text(rows, INDEX_COLUMNS))
    return task.video_id, "done", len(rows), ""


# --- the whole set ----------------------------------------------------------------------------

def _check_settings(out_dir: Path, settings: ExtractSettings) -> None:
    recorded = out_dir / "extract.json"
    wanted = settings.to_dict()
    if recorded.is_file():
        previous = json.loads(recorded.read_text())
        changed = sorted(k for k in wanted if previous.get(k) != wanted[k])
        if changed:
            raise ValueError(
                f"{out_dir} holds faces extracted with other settings ({', '.join(changed)}); "
                "use a new --out folder or the same settings")
    else:
        atomic.write_text(recorded, json.dumps(wanted, indent=2) + "\n")


def _write_if_changed(path: Path, text: str) -> None:
    # A resumed run that found nothing new leaves every file as it was (mtimes included).
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    atomic.write_text(path, text)


def tasks_from_labels(labels: str | Path, split: str | None = None) -> list[VideoTask]:
    from ..evaluation.evaluate import load_labels

    labels = Path(labels)
    base = labels if labels.is_dir() else labels.parent
    tasks, seen = [], set()
    for video in load_labels(labels, split=split):
        vid = video_id(video.path, base)
        if vid in seen:
            continue   # the same file listed twice
        seen.add(vid)
        tasks.append(VideoTask(vid, str(video.path), int(video.label),
                               {k: ("" if v is None else v) for k, v in video.extra.items()}))
    return tasks


def extract(tasks: list[VideoTask], out_dir: str | Path, settings: ExtractSettings = ExtractSettings(),
            *, workers: int = 2, retry_failed: bool = False, progress: bool = True) -> ExtractReport:
    """Extract every task not done yet, then (re)write index.csv and failed.csv."""
    from tqdm import tqdm

    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = out_dir / "parts"
    parts.mkdir(exist_ok=True)
    _check_settings(out_dir, settings)
    report = ExtractReport(videos=len(tasks))

    todo = []
    for task in tasks:
        done = (parts / f"{task.video_id}.csv").is_file()
        failed_before = (parts / f"{task.video_id}.failed").is_file()
        if done or (failed_before and not retry_failed):
            report.skipped += 1
        else:
            todo.append(task)

    if todo:
        bar = tqdm(total=len(todo), desc="extract", unit="video", disable=not progress)
        workers = max(1, min(workers, len(todo)))
        threads = max(1, (os.cpu_count() or 1) // workers)
        if workers == 1:
            _init_worker(settings, str(out_dir), threads)
            results = map(_run_task, todo)
            pool = None
        else:
            pool = multiprocessing.get_context("spawn").Pool(
                workers, initializer=_init_worker, initargs=(settings, str(out_dir), threads))
            results = pool.imap_unordered(_run_task, todo)
        try:
            path_of = {t.video_id: t.path for t in todo}
            faces = 0
            for vid, status, count, error in results:
                report.processed += 1
                if status == "failed":
                    report.failed.append((path_of[vid], error))
                    bar.write(f"skipped {path_of[vid]}: {error}")
                faces += count
                bar.set_postfix(faces=faces, failed=len(report.failed))
                bar.update(1)
        finally:
            bar.close()
            if pool is not None:
                pool.terminate()
                pool.join()

    index_rows, failed_rows = [], []
    for task in tasks:
        part = parts / f"{task.video_id}.csv"
        marker = parts / f"{task.video_id}.failed"
        if part.is_file():
            with part.open(newline="", encoding="utf-8") as handle:
                index_rows += list(csv.DictReader(handle))
        elif marker.is_file():
            error = marker.read_text(encoding="utf-8").rstrip("\n").split("\t", 1)[-1]
            failed_rows.append({"video_id": task.video_id, "video": task.path, "error": error})
    _write_if_changed(out_dir / "index.csv", _csv_text(index_rows, INDEX_COLUMNS))
    failed_csv = out_dir / "failed.csv"
    if failed_rows:
        _write_if_changed(failed_csv, _csv_text(failed_rows, FAILED_COLUMNS))
    elif failed_csv.exists():
        failed_csv.unlink()
    report.faces = len(index_rows)
    report.seconds = time.perf_counter() - started
    return report


def read_index(faces_dir: str | Path) -> list[dict]:
    """The rows of DIR/index.csv, numbers as numbers and `file` as an absolute path."""
    faces_dir = Path(faces_dir)
    index = faces_dir / "index.csv"
    if not index.is_file():
        raise ValueError(f"{faces_dir} has no index.csv; run python -m core extract first")
    numeric = {"label", "frame", "person", "crop_size"}
    real = {"time", "x1", "y1", "x2", "y2", "confidence", "margin", *_KEYPOINT_COLUMNS}
    rows = []
    with index.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            for key in numeric:
                row[key] = int(row[key])
            for key in real:
                value = row.get(key, "")
                row[key] = float(value) if value not in ("", None) else math.nan
            row["file"] = str(faces_dir / row["file"])
            rows.append(row)
    return rows
