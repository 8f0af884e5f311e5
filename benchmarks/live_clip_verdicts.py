"""What the Live page would say about a clip played as the camera: each clip's frames, scaled to
a webcam's 640x480 frame (letterboxed), go through LiveAnalyzer (the Live page's code: detector,
the default verdict's models and ensemble, the sidebar's default views and band) at the clip's own
frame rate; the rolling "Last 3 s" verdict is read twice a second.

    .venv/bin/python benchmarks/live_clip_verdicts.py clip.mp4 [more.mp4 ...]
    .venv/bin/python benchmarks/live_clip_verdicts.py --manifest ../shared/data/manifest.csv \
        --split val --dataset DeepFaceLive --label REAL

Prints per clip how many readings were REAL, UNCERTAIN and FAKE, and the highest P(fake) read.
It is not the browser: Chromium's fake camera and WebRTC's encoding are left out (the browser
tests cover the page itself)."""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from core.live import LiveAnalyzer  # noqa: E402
from core.media.video import probe, sample_frames  # noqa: E402
from core.models.zoo import DEFAULT_MODELS_DIR, fitted_ensemble, load_models  # noqa: E402
from core.pipeline import make_detector  # noqa: E402
from core.settings import AnalysisSettings  # noqa: E402

CAMERA = (640, 480)
READ_EVERY = 0.5


def webcam_frame(image: np.ndarray) -> np.ndarray:
    """The clip's frame fitted into a 640x480 camera frame, as a letterboxed fake camera shows it."""
    scale = min(CAMERA[0] / image.shape[1], CAMERA[1] / image.shape[0])
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    frame = np.zeros((CAMERA[1], CAMERA[0], 3), np.uint8)
    top, left = (CAMERA[1] - size[1]) // 2, (CAMERA[0] - size[0]) // 2
    frame[top:top + size[1], left:left + size[0]] = resized
    return frame


def play(path: Path, live: LiveAnalyzer, seconds: float | None) -> list:
    info = probe(path)
    fps = info.fps or 25.0
    count = info.frame_count if seconds is None else min(info.frame_count, int(seconds * fps))
    readings, started, next_read = [], time.monotonic(), READ_EVERY
    for number, frame in enumerate(sample_frames(path, count, info=info)):
        due = started + number / fps
        if due > time.monotonic():
            time.sleep(due - time.monotonic())
        live.process(webcam_frame(frame.image), timestamp=number / fps)
        if time.monotonic() - started >= next_read:
            next_read += READ_EVERY
            snap = live.snapshot()
            if snap.verdict_label is not None:
                readings.append((snap.verdict_label, snap.verdict_probability))
    return readings


def clips_from_manifest(args) -> list[Path]:
    base = args.manifest.parent
    with args.manifest.open(newline="") as handle:
        return [base / row["path"] for row in csv.DictReader(handle)
                if (not args.split or row.get("split") == args.split)
                and (not args.dataset or row.get("dataset") == args.dataset)
                and (not args.label or row.get("label") == args.label)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clips", nargs="*", type=Path)
    parser.add_argument("--manifest", type=Path)
    parser.add_argument("--split")
    parser.add_argument("--dataset")
    parser.add_argument("--label")
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR)
    parser.add_argument("--seconds", type=float, default=None, help="play at most this much")
    args = parser.parse_args(argv)
    clips = list(args.clips) + (clips_from_manifest(args) if args.manifest else [])
    settings = AnalysisSettings()
    detector = make_detector(settings)
    ensemble = fitted_ensemble(args.models_dir)
    classifiers = load_models("default", args.models_dir)
    print(f"models: {', '.join(c.name for c in classifiers)}; views {settings.views or 'none'} "
          f"(per face: {settings.views_per_face}); "
          f"band {settings.band}; camera {CAMERA[0]}x{CAMERA[1]}")
    total = Counter()
    for path in clips:
        with LiveAnalyzer(detector, classifiers, band=settings.band, margin=settings.margin,
                          ensemble=ensemble, views=settings.views,
                          views_per_face=settings.views_per_face) as live:
            readings = play(path, live, args.seconds)
        labels = Counter(label for label, _ in readings)
        total.update(labels)
        highest = max((p for _, p in readings), default=float("nan"))
        print(f"{path.name}: {len(readings)} readings: REAL {labels['REAL']}, UNCERTAIN "
              f"{labels['UNCERTAIN']}, FAKE {labels['FAKE']}; highest P(fake) {highest:.2f}")
    print(f"all clips: REAL {total['REAL']}, UNCERTAIN {total['UNCERTAIN']}, FAKE {total['FAKE']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
