"""How much of a crop the face fills, measured with the pipeline's own MTCNN, and keypoints for
crops that came without them.

The pipeline cuts a square of (1 + 2 x margin) times the face box's longer side around it; crops
made elsewhere (the DFDC face set) are cut tighter. A model trained on both must see one framing,
so the share is measured on both kinds (`python -m core framing`), and the trainer's `--framing`
cuts the pipeline's crops down to the foreign crops' share (core.training.train)."""
from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import cv2
import numpy as np

from .. import atomic
from ..faces.detector import FaceDetector
from .faceindex import KEYPOINT_COLUMNS, index_path, keypoints_path, label_value, read_face_index

CROP_MIN_CONFIDENCE = 0.9        # a crop holds one face by construction: accept a weaker one
LANDMARK_COLUMNS = ["file", "x1", "y1", "x2", "y2", "confidence", *KEYPOINT_COLUMNS]


def crop_detector() -> FaceDetector:
    """MTCNN as the pipeline builds it, searching the whole crop at full resolution."""
    return FaceDetector(min_confidence=CROP_MIN_CONFIDENCE, detect_long_side=None,
                        min_face_size=24)


def central_face(image: np.ndarray, detector: FaceDetector):
    """The detection nearest the crop's centre (a crop is cut around one face), or None."""
    found = detector.detect(image)
    if not found:
        return None
    side = image.shape[0]
    return min(found, key=lambda d: math.dist(d.center, (side / 2.0, side / 2.0)))


def read_rgb(path: str) -> np.ndarray:
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read face image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def face_share(image: np.ndarray, detector: FaceDetector) -> tuple[float, float] | None:
    """(box share, eye share): the face box's longer side and the eye distance over the crop's
    side; None where MTCNN finds no face."""
    face = central_face(image, detector)
    if face is None:
        return None
    side = float(max(image.shape[:2]))
    eyes = math.dist(face.keypoints["left_eye"], face.keypoints["right_eye"])
    return max(face.width, face.height) / side, eyes / side


def sample_rows(rows: list[dict], count: int, seed: int = 0) -> list[dict]:
    if count <= 0 or count >= len(rows):
        return rows
    picked = np.random.default_rng(seed).choice(len(rows), size=count, replace=False)
    return [rows[i] for i in sorted(picked)]


def framing_report(sources, sample: int = 300, seed: int = 0) -> list[dict]:
    """Per index: faces measured, found, and the median and quartiles of both shares."""
    detector = crop_detector()
    report = []
    for source in sources:
        rows = sample_rows(read_face_index(source), sample, seed)
        shares = [s for s in (face_share(read_rgb(r["file"]), detector) for r in rows) if s]
        box = np.array([s[0] for s in shares]) if shares else np.zeros(0)
        eyes = np.array([s[1] for s in shares]) if shares else np.zeros(0)

        def quartiles(values):
            if not len(values):
                return None
            return [round(float(q), 4) for q in np.percentile(values, [25, 50, 75])]

        report.append({"index": str(index_path(source)), "measured": len(rows),
                       "found": len(shares), "box_share_q25_median_q75": quartiles(box),
                       "eye_share_q25_median_q75": quartiles(eyes)})
    return report


def write_landmarks(source, labels: tuple[int, ...] = (0,), progress: bool = True) -> Path:
    """MTCNN keypoints for the rows of a foreign index with these labels, written beside it as
    `<stem>.keypoints.csv` (read back by read_face_index). Resumable: rows already in the file
    are skipped, and the file grows a block at a time."""
    index_csv = index_path(source)
    out = keypoints_path(index_csv)
    done: dict[str, dict] = {}
    if out.is_file():
        with out.open(newline="", encoding="utf-8") as handle:
            done = {row["file"]: row for row in csv.DictReader(handle)}
    with index_csv.open(newline="", encoding="utf-8") as handle:
        wanted = [row for number, row in enumerate(csv.DictReader(handle), start=2)
                  if row["file"] not in done
                  and label_value(row["label"], f"{index_csv} line {number}") in labels]
    detector = crop_detector()
    started = time.monotonic()
    for n, row in enumerate(wanted, start=1):
        face = central_face(read_rgb(str(index_csv.parent / row["file"])), detector)
        entry = {"file": row["file"]}
        if face is not None:
            entry.update(zip(("x1", "y1", "x2", "y2"), (round(v, 2) for v in face.box)))
            entry["confidence"] = round(face.confidence, 4)
            for name, (x, y) in face.keypoints.items():
                entry[f"{name}_x"], entry[f"{name}_y"] = round(x, 2), round(y, 2)
        done[row["file"]] = entry
        if n % 500 == 0 or n == len(wanted):
            _write(out, done)
            if progress:
                rate = n / max(time.monotonic() - started, 1e-6)
                print(f"landmarks: {n}/{len(wanted)} crops, {rate:.1f}/s, "
                      f"{(len(wanted) - n) / rate / 60:.1f} min left", flush=True)
    if not wanted:
        _write(out, done)
    return out


def _write(out: Path, rows: dict[str, dict]) -> None:
    with atomic.atomic_path(out, suffix=".csv") as tmp:
        with Path(tmp).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=LANDMARK_COLUMNS)
            writer.writeheader()
            for row in rows.values():
                writer.writerow(row)
