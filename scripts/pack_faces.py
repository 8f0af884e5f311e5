"""Packs face indexes into small parts that fit a lent GPU's 64 MiB carry, each part a face index
CSV the trainer reads (`python -m core train --faces PART1 PART2 ...`).

The pipeline's crops are stored as the trainer would see them at `--framing` and its working side
(the central share, shrunk, JPEG quality 95, keypoints moved alike), so they are taken whole there;
foreign crops (dfdc_faces) are copied byte for byte, since the trainer shrinks them itself. A
video's faces stay in one part: the trainer keeps video ids apart per index.

    python scripts/pack_faces.py OUT --faces faces_train faces_val dfdc_faces/index.csv \
        --framing 0.58 --side 143 --foreign-train-per-label 7000 --foreign-val-per-label 500 \
        --parts 3
"""
from __future__ import annotations

import argparse
import csv
import math
import random
import shutil
import sys
import zlib
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.training.faceindex import KEYPOINT_COLUMNS, load_face, read_face_index  # noqa: E402

COLUMNS = ["file", "video_id", "label", "group", "split", "dataset", "method", *KEYPOINT_COLUMNS]


def sample_foreign(rows: list[dict], train_per_label: int, val_per_label: int,
                   seed: int) -> list[dict]:
    """At most this many rows of each label in each split, drawn at random."""
    rng = random.Random(seed)
    kept = []
    for split, limit in (("train", train_per_label), ("val", val_per_label)):
        for label in (0, 1):
            pool = [r for r in rows if r["split"] == split and r["label"] == label]
            rng.shuffle(pool)
            kept.extend(pool[:limit])
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--faces", type=Path, nargs="+", required=True)
    parser.add_argument("--framing", type=float, default=1.0)
    parser.add_argument("--side", type=int, required=True, help="the trainer's working side")
    parser.add_argument("--foreign-train-per-label", type=int, default=None)
    parser.add_argument("--foreign-val-per-label", type=int, default=None)
    parser.add_argument("--parts", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rows = []
    for source in args.faces:
        part = read_face_index(source)
        if not part[0]["pipeline_framing"] and args.foreign_train_per_label is not None:
            part = sample_foreign(part, args.foreign_train_per_label,
                                  args.foreign_val_per_label or 0, args.seed)
        rows.extend(part)

    writers, handles = [], []
    for number in range(args.parts):
        folder = args.out / f"part{number + 1}"
        (folder / "faces").mkdir(parents=True, exist_ok=True)
        handle = (folder / "index.csv").open("w", newline="", encoding="utf-8")
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        handles.append(handle)
        writers.append((folder, writer))

    for count, row in enumerate(rows, start=1):
        folder, writer = writers[zlib.crc32(row["video_id"].encode()) % args.parts]
        source = Path(row["file"])
        name = f"{row['video_id']}__{source.stem}.jpg".replace("/", "_")
        out = {key: row.get(key, "") for key in COLUMNS}
        out["file"] = f"faces/{name}"
        out["label"] = "FAKE" if row["label"] else "REAL"
        if row["pipeline_framing"]:
            image, points = load_face(row, args.side, args.framing)
            ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                                    [cv2.IMWRITE_JPEG_QUALITY, 95])
            if not ok:
                raise SystemExit(f"cannot encode {source}")
            (folder / out["file"]).write_bytes(data.tobytes())
            for index, key in enumerate(KEYPOINT_COLUMNS):
                value = float(points[index // 2][index % 2])
                out[key] = "" if math.isnan(value) else f"{value:.2f}"
        else:
            shutil.copyfile(source, folder / out["file"])
            for key in KEYPOINT_COLUMNS:
                value = row.get(key, math.nan)
                out[key] = "" if math.isnan(value) else f"{value:.2f}"
        writer.writerow(out)
        if count % 5000 == 0:
            print(f"{count}/{len(rows)} faces packed", flush=True)
    for handle in handles:
        handle.close()
    for folder, _ in writers:
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        print(f"{folder}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
