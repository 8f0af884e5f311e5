"""Live page throughput: LiveAnalyzer (draw in the callback, analyse on one worker thread) against
the naive callback that detects and classifies every frame before returning it, and LiveAnalyzer
with its frames scored in a worker process, as the app runs it.

Both are fed the same 640x480 frames (the astronaut's head moving over a textured background) at
camera pace for --seconds each. A callback that takes longer than a frame interval delays every
later frame, as a real camera pipeline does; the shown fps is the frames returned per second.

    .venv/bin/python benchmarks/bench_live.py                  # models from models/ (or a stand-in)
    .venv/bin/python benchmarks/bench_live.py --models-dir DIR --seconds 20 --camera-fps 30
    .venv/bin/python benchmarks/bench_live.py --baseline-runtime tensorflow   # LiteRT vs TensorFlow
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from skimage.data import astronaut  # noqa: E402

from core.faces.detector import FaceDetector, square_crop  # noqa: E402
from core.live import LiveAnalyzer  # noqa: E402
from core.media.annotate import FaceBox, draw_faces  # noqa: E402
from core.models.model_store import discover_models, load_classifier  # noqa: E402
from core.verdicts import verdict as verdicts  # noqa: E402

WIDTH, HEIGHT = 640, 480
HEAD = (80, 0, 380, 300)           # the head-and-shoulders square of the astronaut photo we paste
LOOP_FRAMES = 90                   # pre-rendered, so rendering is not part of the measurement


def moving_face_frames(count: int = LOOP_FRAMES) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = np.stack([60 + 80 * xs / WIDTH, 90 + 60 * ys / HEIGHT, 120 + 0 * xs], axis=-1)
    scene = np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)
    head = astronaut()[HEAD[1]:HEAD[3], HEAD[0]:HEAD[2]]
    side = head.shape[0]
    frames = []
    for i in range(count):
        u = 2 * math.pi * i / count
        left = int((WIDTH - side) / 2 + 0.4 * (WIDTH - side) / 2 * math.sin(u))
        top = int((HEIGHT - side) / 2 + 0.8 * (HEIGHT - side) / 2 * math.cos(u))
        frame = scene.copy()
        frame[top:top + side, left:left + side] = head
        frames.append(frame)
    return frames


def stand_in_models(folder: Path) -> Path:
    """With no trained models at hand: one ResNet50 cut at conv3 at 224 px, about the cost of a
    mid-sized real model (random weights; the scores do not matter here)."""
    from core.models.backbones import build_classifier
    from core.models.model_store import save_model

    model = build_classifier("resnet50", depth="conv3_block4_out", input_size=224)
    save_model(model, folder / "standin_resnet50_conv3.keras")
    return folder


class NaiveCallback:
    """Detect, crop, classify and draw in the callback itself, for every frame."""

    def __init__(self, detector, classifiers, band=0.1):
        self.detector, self.classifiers, self.band = detector, classifiers, band

    def process(self, image, timestamp=None):
        detections = self.detector.detect(image)
        faces = []
        if detections:
            calibrated = {}
            for c in self.classifiers:
                crops = np.stack([square_crop(image, d.box, size=c.input_size) for d in detections])
                calibrated[c.name] = np.atleast_1d(verdicts.calibrate(
                    c.predict(crops), c.card.threshold, c.card.temperature))
            scores = np.atleast_1d(verdicts.ensemble(calibrated))
            faces = [FaceBox(d.box, verdicts.label_for(p, self.band), float(p), i + 1)
                     for i, (d, p) in enumerate(zip(detections, scores))]
        return draw_faces(image, faces)


def run_at_camera_pace(callback, frames, seconds: float, camera_fps: float) -> dict:
    """Feed frames on the camera's clock; a late callback delays the following frames."""
    interval = 1.0 / camera_fps
    durations = []
    start = time.perf_counter()
    next_due = start
    shown = 0
    while True:
        now = time.perf_counter()
        if now - start >= seconds:
            break
        if now < next_due:
            time.sleep(next_due - now)
        t0 = time.perf_counter()
        callback.process(frames[shown % len(frames)], timestamp=t0 - start)
        durations.append(time.perf_counter() - t0)
        shown += 1
        next_due = max(next_due + interval, time.perf_counter())
    elapsed = time.perf_counter() - start
    durations_ms = 1000 * np.asarray(durations)
    return {"shown": shown, "elapsed": elapsed, "shown_fps": shown / elapsed,
            "callback_ms_median": float(np.median(durations_ms)),
            "callback_ms_p95": float(np.percentile(durations_ms, 95))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path,
                        default=Path(os.environ.get("DEEPFAKE_MODELS_DIR",
                                                    Path(__file__).resolve().parent.parent / "models")))
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--camera-fps", type=float, default=30.0)
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--baseline-runtime", choices=("tensorflow", "litert"), default=None,
                        help="also run LiveAnalyzer with the detector and models on this runtime")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        models_dir = args.models_dir
        if not discover_models(models_dir):
            print(f"no models in {models_dir}: building a stand-in (ResNet50 cut at conv3, 224 px)")
            models_dir = stand_in_models(Path(scratch))
        classifiers = [load_classifier(p) for p in discover_models(models_dir)]
        detector = FaceDetector()
        frames = moving_face_frames()
        # Warm both paths once, so tracing is not part of either measurement.
        NaiveCallback(detector, classifiers).process(frames[0])

        print(f"models: {', '.join(c.name for c in classifiers)}; frames {WIDTH}x{HEIGHT}; "
              f"camera {args.camera_fps:g} fps; {args.seconds:g} s each; {os.cpu_count()} CPU cores")

        def in_process(label, on_detector, on_classifiers):
            live = LiveAnalyzer(on_detector, on_classifiers)
            try:
                threaded = run_at_camera_pace(live, frames, args.seconds, args.camera_fps)
                snap = live.snapshot()
                analyses = snap.frames_analyzed
            finally:
                live.close()
            latency = snap.latency_ms
            print(f"{label}: shown {threaded['shown_fps']:5.1f} fps | analyses "
                  f"{analyses / threaded['elapsed']:5.1f}/s ({analyses} of {threaded['shown']} frames) | "
                  f"callback median {threaded['callback_ms_median']:.1f} ms, p95 "
                  f"{threaded['callback_ms_p95']:.1f} ms | frame-to-boxes latency "
                  f"{latency:.0f} ms" if latency is not None else f"{label}: no analysis finished")

        in_process(f"LiveAnalyzer ({detector.runtime})", detector, classifiers)
        if args.baseline_runtime:
            baseline_detector = FaceDetector(runtime=args.baseline_runtime)
            baseline_classifiers = [load_classifier(p, runtime=args.baseline_runtime)
                                    for p in discover_models(models_dir)]
            NaiveCallback(baseline_detector, baseline_classifiers).process(frames[0])
            in_process(f"LiveAnalyzer ({args.baseline_runtime}, baseline)", baseline_detector,
                       baseline_classifiers)

        # As the app runs it: the frames scored by a worker process (serving), same models.
        from core.settings import AnalysisSettings
        from serving.local import LocalWorkers

        workers = LocalWorkers(str(models_dir), slots=1)
        try:
            request = (AnalysisSettings(views="").to_dict(),
                       tuple(c.name for c in classifiers), "mean")
            workers.live_frame(*request, frames[0])         # started and loaded: not measured
            live = LiveAnalyzer(scorer=lambda frame: workers.live_frame(*request, frame),
                                model_names=request[1])
            try:
                in_worker = run_at_camera_pace(live, frames, args.seconds, args.camera_fps)
                snap = live.snapshot()
            finally:
                live.close()
        finally:
            workers.close()
        print(f"in a worker  : shown {in_worker['shown_fps']:5.1f} fps | analyses "
              f"{snap.frames_analyzed / in_worker['elapsed']:5.1f}/s ({snap.frames_analyzed} of "
              f"{in_worker['shown']} frames) | callback median "
              f"{in_worker['callback_ms_median']:.1f} ms, p95 {in_worker['callback_ms_p95']:.1f} ms"
              f" | frame-to-boxes latency {snap.latency_ms:.0f} ms" if snap.latency_ms is not None
              else "in a worker: no analysis finished")

        if not args.skip_naive:
            naive = run_at_camera_pace(NaiveCallback(detector, classifiers), frames,
                                       args.seconds, args.camera_fps)
            print(f"naive        : shown {naive['shown_fps']:5.1f} fps | analyses "
                  f"{naive['shown_fps']:5.1f}/s (every frame) | callback median "
                  f"{naive['callback_ms_median']:.1f} ms, p95 {naive['callback_ms_p95']:.1f} ms | "
                  f"frame-to-boxes latency {naive['callback_ms_median']:.0f} ms")
        target = 15.0
        verdict = "meets" if threaded["shown_fps"] >= target else "MISSES"
        print(f"target >= {target:g} fps shown at {WIDTH}x{HEIGHT}: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
