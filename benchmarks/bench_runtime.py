"""LiteRT against TensorFlow on the same networks, measured in the same run, interleaved so both
see the same load: every model in a folder, per face at batch 32 (a clip's batches) and at batch 1
(the Live page's), and MTCNN per frame, with the largest difference between the two runtimes'
outputs. The faces and frames are cut from a real clip.

    .venv/bin/python benchmarks/bench_runtime.py ../shared/data/videos/dfdc/real/lynaeydofd.mp4 \
        [--models-dir models] [--rounds 10]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from core.faces.detector import square_crop  # noqa: E402
from core.media.video import sample_frames  # noqa: E402
from core.models.zoo import DEFAULT_MODELS_DIR, load_models  # noqa: E402
from core.pipeline import make_detector  # noqa: E402
from core.settings import AnalysisSettings  # noqa: E402

RUNTIMES = ("tensorflow", "litert")


def interleaved(calls: dict, rounds: int) -> dict:
    """Median seconds of each call over `rounds`, the calls alternated within each round."""
    for call in calls.values():
        call()                                           # warm-up
    seconds = {key: [] for key in calls}
    for _ in range(rounds):
        for key, call in calls.items():
            started = time.perf_counter()
            call()
            seconds[key].append(time.perf_counter() - started)
    return {key: float(np.median(values)) for key, values in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()

    settings = AnalysisSettings()
    frames = [frame.image for frame in sample_frames(args.video, 32)]
    detectors = {runtime: make_detector(settings, runtime=runtime) for runtime in RUNTIMES}
    found = [(image, faces[0]) for image in frames if (faces := detectors["tensorflow"].detect(image))]
    if not found:
        raise SystemExit(f"no face found in {args.video}")
    crops = np.stack([square_crop(image, face.box, margin=settings.margin, size=224)
                      for image, face in found])
    print(f"{args.video.name}: {len(frames)} frames, {len(found)} faces; medians of "
          f"{args.rounds} interleaved rounds")

    def detect_all(detector):
        return lambda: [detector.detect(image) for image in frames]

    detect = interleaved({r: detect_all(d) for r, d in detectors.items()}, args.rounds)
    worst_box = max(float(np.abs(np.subtract(a.box, b.box)).max())
                    for image in frames
                    for a, b in zip(detectors["litert"].detect(image), detectors["tensorflow"].detect(image)))
    print(f"\n{'MTCNN':<42} TF {detect['tensorflow'] / len(frames) * 1000:6.2f} ms/frame  LiteRT "
          f"{detect['litert'] / len(frames) * 1000:6.2f}  {detect['tensorflow'] / detect['litert']:4.2f}x"
          f"  largest box difference {worst_box:.1e} px")

    models = {runtime: load_models("all", args.models_dir, runtime=runtime) for runtime in RUNTIMES}
    print(f"\n{'model':<42} {'batch':>5}  {'TF ms/face':>10}  {'LiteRT':>7}  speed-up  largest |dP|")
    for on_tf, on_litert in zip(models["tensorflow"], models["litert"]):
        size = on_tf.input_size
        faces = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in crops])
        faces = np.resize(faces, (32,) + faces.shape[1:])        # 32 faces, repeated if fewer
        largest = float(np.abs(on_tf.predict(faces) - on_litert.predict(faces)).max())
        for batch in (32, 1):
            part = faces[:batch]
            timed = interleaved({"tensorflow": lambda: on_tf.predict(part),
                                 "litert": lambda: on_litert.predict(part)}, args.rounds)
            print(f"{on_tf.name:<42} {batch:>5}  {timed['tensorflow'] / batch * 1000:10.2f}  "
                  f"{timed['litert'] / batch * 1000:7.2f}  {timed['tensorflow'] / timed['litert']:7.2f}x"
                  f"  {largest:.1e}")


if __name__ == "__main__":
    main()
