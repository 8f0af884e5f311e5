"""Face indexes the trainer reads: the folder `python -m core extract` writes (faces cut from
labelled videos at the pipeline's framing) and any CSV with the columns of
`shared/data/dfdc_faces/index.csv` (file, label, group, split, dataset, method; crops cut by
someone else, at their own framing).

Every row comes out in one form: `file` absolute, `label` 0/1, `video_id` (the extract's id, or
the crop's file stem where one crop stands for one video), `group`, `split`, `dataset`, the five
keypoints in crop pixels (NaN where unknown) and `pipeline_framing`: True for crops cut as
inference cuts them (square_crop at the index's margin), False for crops of foreign framing.

A keypoints file (`python -m core landmarks`) beside a foreign CSV, `<csv stem>.keypoints.csv`,
adds MTCNN keypoints to its rows, so self-blended fakes can be made from them too.

`load_face` reads one row's crop as the trainer (and a teacher cache) sees it: a pipeline crop cut
to the model's framing, a foreign crop whole."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import cv2
import numpy as np

from ..faces.detector import KEYPOINT_NAMES
from ..models.model_store import file_sha256

KEYPOINT_COLUMNS = [f"{name}_{axis}" for name in KEYPOINT_NAMES for axis in ("x", "y")]
_LABELS = {"0": 0, "1": 1, "real": 0, "fake": 1}


def index_path(source: str | Path) -> Path:
    """The CSV behind a faces folder (its index.csv) or a CSV given directly."""
    source = Path(source)
    if source.is_dir():
        source = source / "index.csv"
        if not source.is_file():
            raise ValueError(f"{source.parent} has no index.csv; run python -m core extract first")
    elif not source.is_file():
        raise ValueError(f"no face index at {source}")
    return source


def keypoints_path(index_csv: Path) -> Path:
    return index_csv.with_name(f"{index_csv.stem}.keypoints.csv")


def label_value(value: str, where: str) -> int:
    try:
        return _LABELS[str(value).strip().lower()]
    except KeyError:
        raise ValueError(f"{where}: label must be REAL/FAKE or 0/1, not {value!r}") from None


def _number(value) -> float:
    return float(value) if value not in ("", None) else math.nan


def read_face_index(source: str | Path) -> list[dict]:
    """The rows of one face index (a faces folder or a CSV), in the common form above."""
    index_csv = index_path(source)
    base = index_csv.parent
    with index_csv.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or [])
        missing = {"file", "label"} - columns
        if missing:
            raise ValueError(f"{index_csv} lacks the column(s) {', '.join(sorted(missing))}")
        raw = list(reader)
    pipeline = "margin" in columns and "video_id" in columns
    extra_points = {}
    points_csv = keypoints_path(index_csv)
    if not pipeline and points_csv.is_file():
        with points_csv.open(newline="", encoding="utf-8") as handle:
            extra_points = {row["file"]: row for row in csv.DictReader(handle)}
    rows = []
    for number, row in enumerate(raw, start=2):
        where = f"{index_csv} line {number}"
        points = extra_points.get(row["file"], row)
        out = dict(row)
        out.update({
            "file": str(base / row["file"]),
            "label": label_value(row["label"], where),
            "video_id": row.get("video_id") or Path(row["file"]).stem,
            "group": row.get("group") or row.get("video_id") or Path(row["file"]).stem,
            "split": row.get("split") or "",
            "dataset": row.get("dataset") or "",
            "pipeline_framing": pipeline,
        })
        for key in KEYPOINT_COLUMNS:
            out[key] = _number(points.get(key))
        if pipeline:
            out["margin"] = _number(row.get("margin"))
        rows.append(out)
    return rows


def read_face_indexes(sources) -> list[dict]:
    """The rows of several indexes; video ids are kept apart per index."""
    rows = []
    seen: dict[str, Path] = {}
    for source in sources:
        index_csv = index_path(source).resolve()
        if index_csv in seen.values():
            raise ValueError(f"{index_csv} is given twice")
        part = read_face_index(index_csv)
        for row in part:
            owner = seen.setdefault(row["video_id"], index_csv)
            if owner != index_csv:
                raise ValueError(f"video id {row['video_id']!r} is in both {owner} and {index_csv}")
        rows.extend(part)
    if not rows:
        raise ValueError("the face indexes hold no rows")
    return rows


def describe_indexes(sources) -> list[dict]:
    """What the card records of each index: its path, sha256 and row count."""
    described = []
    for source in sources:
        index_csv = index_path(source)
        entry = {"index": str(index_csv.resolve()), "sha256": file_sha256(index_csv)}
        points = keypoints_path(index_csv)
        if points.is_file():
            entry["keypoints"] = {"file": str(points.resolve()), "sha256": file_sha256(points)}
        described.append(entry)
    return described


def row_keypoints(row: dict) -> np.ndarray:
    return np.array([[row.get(f"{n}_x", math.nan), row.get(f"{n}_y", math.nan)]
                     for n in KEYPOINT_NAMES], dtype=np.float64)


def framing_window(side: int, framing: float) -> tuple[int, int]:
    """(offset, side) of the central `framing` share of a square crop of this side."""
    keep = max(1, int(round(side * framing)))
    return (side - keep) // 2, keep


def load_face(row: dict, work_side: int, framing: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(crop, keypoints): one face read from its file, a pipeline crop cut to its central
    `framing` share (what the exported model's first layer does), shrunk to `work_side` when
    larger (the training crop never needs more pixels than that), keypoints moved alike.
    Rows of foreign framing are taken whole: they are cut at that framing already."""
    image = cv2.imread(row["file"], cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read face image {row['file']}; extract again")
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.shape[0] != image.shape[1]:
        raise ValueError(f"face image {row['file']} is not square")
    points = row_keypoints(row)
    if framing < 1.0 and row.get("pipeline_framing", True):
        offset, keep = framing_window(image.shape[0], framing)
        image = image[offset:offset + keep, offset:offset + keep]
        points = points - offset
    side = image.shape[0]
    if side > work_side:
        scale = work_side / side
        image = cv2.resize(image, (work_side, work_side), interpolation=cv2.INTER_AREA)
        points = (points + 0.5) * scale - 0.5
    return np.ascontiguousarray(image), points
