"""End-to-end speed of the core on one video, next to baselines measured in the same run.

    .venv/bin/python benchmarks/bench_pipeline.py VIDEO [--models-dir models] [--origin-frames 5]
        [--baseline-dir DIR] [--runtime litert|tensorflow] [--baseline-runtime tensorflow]
    .venv/bin/python benchmarks/bench_pipeline.py --long-video   # memory on a generated 1-hour clip

Prints: decode-only time (baseline 1), the default verdict (the fitted ensemble's members, as the
app and the CLI run by default), the verdict with one model, with the five origin families and with
every model (the default verdict's members scoring the views, beside every model scoring them), the
annotated full clip, and the origin project's way (baseline 2: the plain `mtcnn` package on full-resolution
frames, full-depth 224 px backbone). The origin's way is timed on --origin-frames frames and
extrapolated to 32 sampled frames (verdict) and to every frame (annotated output); that is said in
the output. When the models folder lacks a backbone family, an untrained model of its planned shape is
built in a temporary folder (shapes in STAND_IN_SHAPES): speed does not depend on the weights.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import av  # noqa: E402
import numpy as np  # noqa: E402

from core.media.video import probe, sample_frames  # noqa: E402
from core.models.backbones import ORIGIN_BACKBONES, build_classifier, get_spec  # noqa: E402
from core.models.model_store import DEFAULT_RUNTIME, RUNTIMES, save_model  # noqa: E402
from core.models.zoo import (DEFAULT_MODELS_DIR, available_models, default_selection,  # noqa: E402
                             fitted_ensemble, load_models)
from core.pipeline import analyze_video, make_detector  # noqa: E402
from core.settings import VIEWS_PER_FACE, AnalysisSettings  # noqa: E402


def decode_only(path: Path) -> float:
    started = time.perf_counter()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for _ in container.decode(stream):
            pass
    return time.perf_counter() - started


# The shapes of the shipped zoo (models/README.md); a family missing from the models folder is
# timed with an untrained model of its shape.
STAND_IN_SHAPES = {
    "efficientnetb7": ("block2c_add", 96),
    "inceptionresnetv2": ("block35_10_ac", 128),
    "inceptionv3": ("mixed2", 128),
    "resnet50": ("conv3_block4_out", 128),
    "vgg16": ("block3_pool", 96),
}


def with_stand_ins(models_dir: Path, folder: Path) -> Path:
    """A folder with the shipped models plus untrained stand-ins for the missing families."""
    import shutil

    shipped = available_models(models_dir)
    for card in shipped.values():
        shutil.copy2(card.card_path, folder / card.card_path.name)
        shutil.copy2(card.model_path, folder / card.model_path.name)
    if fitted_ensemble(models_dir) is not None:
        shutil.copy2(fitted_ensemble(models_dir).card_path, folder)
    present = {card.backbone for card in shipped.values()}
    for name, (depth, size) in STAND_IN_SHAPES.items():
        if name in present:
            continue
        print(f"  {name}: untrained stand-in, cut at {depth}, {size} px")
        model = build_classifier(name, depth=depth, input_size=size)
        save_model(model, folder / f"standin_{name}.keras", name=f"standin_{name}", backbone=name,
                   depth=depth)
    return folder


def origin_way(path: Path, frames: int, backbone: str) -> dict:
    """The origin project's per-frame cost: plain mtcnn on the full-resolution frame, then a
    full-depth 224 px backbone on each face."""
    import cv2
    from mtcnn import MTCNN

    detector = MTCNN()
    images = [f.image for f in sample_frames(path, frames)]
    detector.detect_faces(images[0])                       # first call builds the networks
    started = time.perf_counter()
    faces = [detector.detect_faces(image) for image in images]
    mtcnn_per_frame = (time.perf_counter() - started) / len(images)
    model = build_classifier(backbone, depth="full", input_size=224)
    crops = []
    for image, found in zip(images, faces):
        for face in found:
            x, y, w, h = face["box"]
            crop = image[max(y, 0):y + h, max(x, 0):x + w]
            crops.append(cv2.resize(crop, (224, 224)))
    # 32 faces, as many as a verdict scores; warmed up on the same shape so only compute is timed.
    crops = crops or [np.zeros((224, 224, 3), np.uint8)]
    batch = np.stack([crops[i % len(crops)] for i in range(32)]).astype(np.float32)
    import tensorflow as tf

    predict = tf.function(lambda x: model(x, training=False))
    for start in range(0, 32, 8):
        predict(batch[start:start + 8])
    started = time.perf_counter()
    for start in range(0, 32, 8):
        predict(batch[start:start + 8])
    classify_per_face = (time.perf_counter() - started) / len(batch)
    faces_per_frame = max(np.mean([len(f) for f in faces]), 1.0)
    return {"mtcnn_per_frame": mtcnn_per_frame, "classify_per_face": classify_per_face,
            "faces_per_frame": faces_per_frame}


class PeakRss:
    """Samples this process's resident memory every 50 ms; RSS covers PyAV's and TF's buffers,
    which tracemalloc does not see."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def current() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(0.05)

    def __enter__(self):
        self.peak = self.current()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def long_video_memory(models_dir: Path) -> None:
    from tests.fixtures import make_face_clip

    classifiers = load_models("all", models_dir)[:1]
    settings = AnalysisSettings()
    detector = make_detector(settings)
    with tempfile.TemporaryDirectory() as tmp:
        short = make_face_clip(Path(tmp) / "short.mp4", frames=250, size=(320, 180), fps=25,
                               face_size=120)
        print("writing a generated 1-hour clip (320x180, 5 fps, 18000 frames)...", flush=True)
        started = time.perf_counter()
        long = make_face_clip(Path(tmp) / "hour.mp4", frames=18000, size=(320, 180), fps=5,
                              face_size=120, keyint=50)
        print(f"  written in {time.perf_counter() - started:.1f} s; "
              f"duration {probe(long).duration / 60:.1f} min")
        analyze_video(short, detector, classifiers, settings)    # warm every trace first
        for label, clip in (("10 s clip", short), ("1-hour clip", long)):
            with PeakRss() as rss:
                base = rss.peak
                started = time.perf_counter()
                result = analyze_video(clip, detector, classifiers, settings)
                seconds = time.perf_counter() - started
            print(f"{label:<12} {seconds:6.1f} s  peak RSS {rss.peak / 2**20:7.0f} MiB "
                  f"(+{(rss.peak - base) / 2**20:.0f} MiB over the start)  faces {len(result.faces)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", nargs="?", type=Path)
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR)
    parser.add_argument("--origin-frames", type=int, default=5)
    parser.add_argument("--one-model", default=None,
                        help="model for the one-model verdict (default: the ResNet50 one, else the first)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per measurement; the best is kept")
    parser.add_argument("--long-video", action="store_true", help="memory on a generated 1-hour clip")
    parser.add_argument("--baseline-dir", type=Path, default=None,
                        help="also time this folder's default verdict, interleaved with the "
                             "default's runs (a model change against the one it replaces)")
    parser.add_argument("--runtime", choices=RUNTIMES, default=DEFAULT_RUNTIME,
                        help="what runs the models' forward passes")
    parser.add_argument("--baseline-views-per-face", choices=VIEWS_PER_FACE, default=None,
                        help="the baseline's views_per_face (default: the app's)")
    parser.add_argument("--baseline-runtime", choices=RUNTIMES, default=None,
                        help="also time the default verdict (of --baseline-dir, if given) with "
                             "its models on this runtime, interleaved with the default's runs")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        models_dir = args.models_dir
        present = {c.backbone for c in available_models(models_dir).values()}
        if not set(ORIGIN_BACKBONES) <= present:
            print(f"{models_dir} lacks some origin families; speed does not depend on weights:")
            models_dir = with_stand_ins(models_dir, Path(tmp))
        if args.long_video:
            long_video_memory(models_dir)
            return
        if args.video is None:
            parser.error("give a VIDEO or --long-video")
        run(args, models_dir)


def run(args, models_dir: Path) -> None:
    info = probe(args.video)
    print(f"video: {args.video.name} {info.width}x{info.height} {info.fps:.2f} fps "
          f"{info.duration:.1f} s {info.frame_count} frames")
    classifiers = load_models("all", models_dir, runtime=args.runtime)
    settings = AnalysisSettings()
    detector = make_detector(settings, runtime=args.runtime)
    print(f"runtime: MTCNN {detector.runtime}; "
          + ", ".join(f"{c.name} {c.runtime}" for c in classifiers))
    analyze_video(args.video, detector, classifiers, settings, keep_images=False)  # warm-up

    def best(fn):
        return min(fn() for _ in range(args.repeat))

    def timed(models, annotated=None, ensemble=None, views=None, on=None, views_on=None,
              per_face=None):
        chosen_settings = settings if views is None else replace(settings, views=views)
        if views_on is not None:
            chosen_settings = replace(chosen_settings, views_on=views_on)
        if per_face is not None:
            chosen_settings = replace(chosen_settings, views_per_face=per_face)

        def once():
            started = time.perf_counter()
            once.result = analyze_video(args.video, on or detector, models, chosen_settings,
                                        keep_images=False, annotated_path=annotated,
                                        ensemble=ensemble)
            return time.perf_counter() - started
        return once

    decode = best(lambda: decode_only(args.video))
    default_names = default_selection(models_dir)
    default_models = [c for c in classifiers if c.name in default_names]
    default = timed(models=default_models, ensemble=fitted_ensemble(models_dir))
    if args.baseline_dir is None and args.baseline_runtime is None:
        t_default, t_baseline = best(default), None
    else:
        baseline_dir = args.baseline_dir or models_dir
        baseline_runtime = args.baseline_runtime or args.runtime
        baseline_label = f"{baseline_dir.name}/, {baseline_runtime}"
        baseline_names = default_selection(baseline_dir)
        baseline_models = load_models(baseline_names, baseline_dir, runtime=baseline_runtime)
        baseline_detector = (detector if baseline_runtime == args.runtime
                             else make_detector(settings, runtime=baseline_runtime))
        baseline_per_face = args.baseline_views_per_face or settings.views_per_face
        baseline_label += f", views per face: {baseline_per_face}"
        baseline = timed(models=baseline_models, ensemble=fitted_ensemble(baseline_dir),
                         on=baseline_detector, per_face=baseline_per_face)
        baseline()                                          # warm its traces
        # Alternated, so a busier moment of the machine falls on both alike.
        pairs = [(default(), baseline()) for _ in range(args.repeat)]
        t_default, t_baseline = min(p[0] for p in pairs), min(p[1] for p in pairs)
    # What the views cost: the same verdict on the crops alone, and with the mirror alone.
    t_default_crops = best(timed(models=default_models, ensemble=fitted_ensemble(models_dir),
                                 views=""))
    t_default_flip = best(timed(models=default_models, ensemble=fitted_ensemble(models_dir),
                                views="flip"))
    other_per_face = next(v for v in VIEWS_PER_FACE if v != settings.views_per_face)
    t_default_other = best(timed(models=default_models, ensemble=fitted_ensemble(models_dir),
                                 per_face=other_per_face))
    origin_five = [c for c in classifiers if get_spec(c.card.backbone).origin]
    five = timed(models=origin_five)
    t_five = best(five)
    chosen = next((c for c in classifiers if c.name == args.one_model), None) or next(
        (c for c in classifiers if c.card.backbone == "resnet50"), classifiers[0])
    one = timed(models=[chosen])
    t_one = best(one)
    stages = one.result.timings
    # Every model as the app runs them: the default verdict's members score the views, the
    # others beside them the crops as found; the baseline, every model scoring every view.
    fitted = fitted_ensemble(models_dir)
    all_models = timed(models=classifiers, ensemble=fitted)
    every_view = timed(models=classifiers, ensemble=fitted, views_on="all")
    pairs = [(all_models(), every_view()) for _ in range(args.repeat)]
    t_all, t_all_every_view = min(p[0] for p in pairs), min(p[1] for p in pairs)
    with tempfile.TemporaryDirectory() as tmp:
        annotated = timed(models=classifiers, annotated=Path(tmp) / "annotated.mp4",
                          ensemble=fitted)
        t_annotated = best(annotated)
    origin = origin_way(args.video, args.origin_frames, chosen.card.backbone)
    frames = settings.frames
    origin_verdict = decode + frames * (origin["mtcnn_per_frame"]
                                        + origin["faces_per_frame"] * origin["classify_per_face"])
    origin_annotated = decode + info.frame_count * (
        origin["mtcnn_per_frame"] + origin["faces_per_frame"] * origin["classify_per_face"])

    print("\nstage times, verdict with one model (s):")
    for stage, seconds in stages.items():
        print(f"  {stage:<20} {seconds:6.2f}")
    print("  per model (all of them, as the app runs them):")
    for name, v in all_models.result.verdicts.items():
        print(f"    {name:<28} {v.seconds:6.2f}")
    print("\nend to end (s), best of", args.repeat)
    print(f"  default verdict = {default.result.primary} "
          f"({default.result.ensemble.get('kind', 'one model')}: "
          + ", ".join(f"{n} {w:.2f}" for n, w in default.result.ensemble.get('weights', {}).items())
          + ")")
    rows = [
        ("decode only (baseline)", decode, None),
        (f"default verdict ({len(default_models)} model(s), views {settings.views or 'none'}, "
         f"per face: {settings.views_per_face})", t_default, 2),
        (f"  the same, views per face: {other_per_face}", t_default_other, None),
        ("  the same, the crops alone", t_default_crops, None),
        ("  the same, crops and mirrors", t_default_flip, None),
        *([(f"default verdict of {baseline_label} ({len(baseline_models)} model(s); "
            "baseline)", t_baseline, 2)] if t_baseline is not None else []),
        (f"verdict, one model ({chosen.name})", t_one, 3),
        (f"verdict, the {len(origin_five)} origin families + mean", t_five, 6),
        (f"verdict, all {len(classifiers)} models (views: the verdict's)", t_all, 6),
        ("  the same, every model scoring the views (baseline)", t_all_every_view, None),
        ("annotated full clip, all models", t_annotated, 10),
    ]
    for label, seconds, target in rows:
        ratio = seconds / decode
        goal = "" if target is None else f"  target <= {target}x: {'met' if ratio <= target else 'MISSED'}"
        print(f"  {label:<44} {seconds:7.2f}  {ratio:5.1f}x decode{goal}")
    print(f"\norigin's way (plain mtcnn on full-resolution frames, full-depth "
          f"{chosen.card.backbone} at 224 px), timed on {args.origin_frames} frames and "
          f"extrapolated: MTCNN {origin['mtcnn_per_frame']:.2f} s/frame, classifier "
          f"{origin['classify_per_face'] * 1000:.0f} ms/face")
    print(f"  verdict on {frames} frames (extrapolated)            {origin_verdict:7.1f}  "
          f"ours {t_one:.2f} s: {origin_verdict / t_one:5.1f}x faster")
    print(f"  annotated, MTCNN on all {info.frame_count} frames (extrapolated) {origin_annotated:7.1f}  "
          f"ours {t_annotated:.2f} s: {origin_annotated / t_annotated:5.1f}x faster (target >= 30x)")


if __name__ == "__main__":
    main()
