"""Video (or photo) -> sampled frames -> faces -> persons -> scores per model -> verdict.

Decoding runs in a thread ahead of detection (PyAV and TensorFlow both release the GIL), with a
small bounded queue so memory stays flat however long the clip is.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from .verdicts import verdict as verdicts
from .media.annotate import FaceBox, draw_faces, scaled_boxes, write_annotated_video
from .verdicts.ensemble import EnsembleCard
from .verdicts.ensemble import choose as choose_ensemble
from .errors import first_line
from .faces.detector import FaceDetector, square_crop
from .media.image import is_image_file, read_image, write_jpeg
from .models.model_store import Classifier
from .results import ENSEMBLE, NO_FACE, AnalysisResult, FaceResult, ModelVerdict, PersonResult
from .settings import AnalysisSettings
from .faces.tracking import link_tracks
from .verdicts.views import ORIGINAL, disagreement, parse_views, predict_views, view_turns
from .media.video import DecodeStats, Frame, probe, sample_frames

ProgressCallback = Callable[[str, float], None]

# A photo is searched for faces at up to this long side (a clip's frames at detect_long_side):
# a face 120 px wide in a 4000 px group photo is 48 px there, above MTCNN's smallest face.
PHOTO_DETECT_LONG_SIDE = 1600
STILL_LONG_SIDE = 960   # gallery stills: enough to read a face box, small enough to keep 32 in memory
GALLERY_CROP_SIZE = 160

# Share of the progress bar each stage takes; annotation only when asked for.
_STAGE_SPAN = {"detect": (0.0, 0.55), "classify": (0.55, 0.85), "annotate": (0.85, 1.0)}


def make_detector(settings: AnalysisSettings, runtime: str = "litert") -> FaceDetector:
    return FaceDetector(
        min_confidence=settings.min_confidence,
        detect_long_side=settings.detect_long_side,
        min_face_size=settings.min_face_size,
        runtime=runtime,
    )


class _Progress:
    """Each stage's fraction placed on the whole bar, passed on in steps of at least `step`: the
    annotate stage reports every frame of the clip, and in the app each report is a message to
    the browser to redraw."""

    def __init__(self, callback: ProgressCallback | None, annotate: bool, step: float = 0.01):
        self._callback = callback
        self._scale = 1.0 if annotate else _STAGE_SPAN["annotate"][0]
        self._step = step
        self._last: tuple[str, float] | None = None

    def __call__(self, stage: str, fraction: float) -> None:
        if self._callback is None:
            return
        start, end = _STAGE_SPAN[stage]
        overall = min((start + (end - start) * min(max(fraction, 0.0), 1.0)) / self._scale, 1.0)
        if self._last is not None and self._last[0] == stage and overall < 1.0 \
                and overall - self._last[1] < self._step:
            return
        self._last = (stage, overall)
        self._callback(stage, overall)


def _decode_ahead(path: Path, count: int, info, frames_out: queue.Queue, stop: threading.Event,
                  busy: list[float], stats: DecodeStats) -> None:
    started = time.perf_counter()
    try:
        for frame in sample_frames(path, count, info=info, stats=stats):
            while not stop.is_set():
                try:
                    frames_out.put(frame, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if stop.is_set():
                return
        frames_out.put(None)
    except BaseException as error:  # handed to the consumer, which re-raises it
        frames_out.put(error)
    finally:
        busy.append(time.perf_counter() - started)


def decode_warnings(stats: DecodeStats, sampled: int, expected: int) -> list[str]:
    """What a person should know about the part of the video that could not be read."""
    warnings = []
    if stats.bad_packets:
        share = stats.bad_packets / max(stats.packets, 1)
        warnings.append(
            f"{stats.bad_packets} of the {stats.packets} packets read ({share:.0%}) were damaged "
            f"and could not be decoded" + ("; the rest of the file was given up"
                                           if stats.gave_up else "")
            + "; the verdict covers the frames that decoded")
    if stats.retimed_frames:
        warnings.append(f"{stats.retimed_frames} frames had missing or out-of-order timestamps; "
                        "their times were counted from the frame rate")
    if sampled < expected:
        warnings.append(f"only {sampled} of the {expected} frames to sample could be read")
    return warnings


def _downscale(image: np.ndarray, long_side: int) -> tuple[np.ndarray, float]:
    scale = min(1.0, long_side / max(image.shape[:2]))
    if scale == 1.0:
        return image, 1.0
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def _detect_and_crop(detector: FaceDetector, image: np.ndarray, frame_index: int,
                     crop_sizes: Sequence[int], margin: float, crops: dict,
                     long_side_at_least: int = 0) -> list:
    """The faces of one frame; each one's square crop at every classifier's input size goes
    into `crops` under (frame_index, position, size)."""
    detections = detector.detect(image, long_side_at_least=long_side_at_least)
    for d, detection in enumerate(detections):
        for size in crop_sizes:
            crops[(frame_index, d, size)] = square_crop(image, detection.box, margin=margin,
                                                        size=size)
    return detections


def analyze_file(path: str | Path, detector: FaceDetector, classifiers: Sequence[Classifier],
                 settings: AnalysisSettings = AnalysisSettings(), **options) -> AnalysisResult:
    """A photo (JPEG, PNG, WebP, BMP) through `analyze_image`, anything else through
    `analyze_video`; the same options and the same result either way."""
    analyze = analyze_image if is_image_file(path) else analyze_video
    return analyze(path, detector, classifiers, settings, **options)


def analyze_image(
    path: str | Path,
    detector: FaceDetector,
    classifiers: Sequence[Classifier],
    settings: AnalysisSettings = AnalysisSettings(),
    *,
    annotated_path: str | Path | None = None,
    keep_images: bool = True,
    progress: ProgressCallback | None = None,
    ensemble: EnsembleCard | None = None,
) -> AnalysisResult:
    """Analyse one photo as a clip of one frame: its faces, every model on each, the verdict by
    the same rules; `annotated_path` gets a JPEG with the boxes (downscaled to the setting
    annotated_long_side). Raises an `ImageError` for a file that is not a usable photo."""
    if not classifiers:
        raise ValueError("analyze_image needs at least one classifier")
    report = _Progress(progress, annotated_path is not None)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    image, info, notes = read_image(path, max_pixels=settings.max_image_pixels)
    timings["decode"] = time.perf_counter() - started
    report("detect", 0.0)

    t0 = time.perf_counter()
    crops: dict[tuple[int, int, int], np.ndarray] = {}
    detections = _detect_and_crop(detector, image, 0, sorted({c.input_size for c in classifiers}),
                                  settings.margin, crops, PHOTO_DETECT_LONG_SIDE)
    timings["detect"] = time.perf_counter() - t0
    report("detect", 1.0)

    result, tracks, face_keys = _judge(info, classifiers, settings, ensemble, [(0, 0.0)],
                                       [(0, detections)], crops, timings, report)
    result.warnings = notes
    if keep_images:
        _attach_gallery_images(result, {0: _downscale(image, STILL_LONG_SIDE)}, crops, face_keys)
    if annotated_path is not None:
        t0 = time.perf_counter()
        shown, scale = _downscale(image, settings.annotated_long_side or max(image.shape[:2]))
        boxes = _faces_at_frame(result, tracks)(0)
        try:
            write_jpeg(annotated_path, draw_faces(shown, scaled_boxes(boxes, scale, scale)))
            result.annotated_image = str(annotated_path)
        except Exception as error:  # noqa: BLE001 - the verdict above stands without the image
            result.warnings.append(f"the annotated image could not be written "
                                   f"({first_line(error)}); the "
                                   "verdict and reports do not depend on it")
        report("annotate", 1.0)
        timings["annotate"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started
    return result


def analyze_video(
    path: str | Path,
    detector: FaceDetector,
    classifiers: Sequence[Classifier],
    settings: AnalysisSettings = AnalysisSettings(),
    *,
    annotated_path: str | Path | None = None,
    keep_images: bool = True,
    progress: ProgressCallback | None = None,
    ensemble: EnsembleCard | None = None,
) -> AnalysisResult:
    """Analyse one video with every classifier given. The ensemble is the fitted one (`ensemble`,
    when all its members are among the classifiers), else the mean of their calibrated
    probabilities. Raises a `VideoError` for input that is not a usable video."""
    if not classifiers:
        raise ValueError("analyze_video needs at least one classifier")
    path = Path(path)
    report = _Progress(progress, annotated_path is not None)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    info = probe(path, max_pixels=settings.max_frame_pixels, max_duration=settings.max_duration_s)
    timings["probe"] = time.perf_counter() - started
    report("detect", 0.0)

    # Stage 1: decode (thread) and detect + crop (here) over the sampled frames.
    crop_sizes = sorted({c.input_size for c in classifiers})
    frames_q: queue.Queue = queue.Queue(maxsize=4)
    stop = threading.Event()
    decode_busy: list[float] = []
    stats = DecodeStats()
    decoder = threading.Thread(
        target=_decode_ahead,
        args=(path, settings.frames, info, frames_q, stop, decode_busy, stats),
        name="decode-ahead", daemon=True)
    stage_start = time.perf_counter()
    decoder.start()
    sampled: list[tuple[int, float]] = []
    detections_per_frame = []
    crops: dict[tuple[int, int, int], np.ndarray] = {}   # (frame_index, detection, size) -> crop
    stills: dict[int, tuple[np.ndarray, float]] = {}
    detect_busy = 0.0
    expected = min(settings.frames, max(info.frame_count, 1))
    try:
        while True:
            item = frames_q.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            frame: Frame = item
            t0 = time.perf_counter()
            detections = _detect_and_crop(detector, frame.image, frame.index, crop_sizes,
                                          settings.margin, crops)
            detect_busy += time.perf_counter() - t0
            sampled.append((frame.index, frame.time))
            detections_per_frame.append((frame.index, detections))
            if keep_images:
                stills[frame.index] = _downscale(frame.image, STILL_LONG_SIDE)
            report("detect", len(sampled) / expected)
    finally:
        stop.set()
        decoder.join()
    timings["decode"] = decode_busy[0] if decode_busy else 0.0
    timings["detect"] = detect_busy
    timings["sample_and_detect"] = time.perf_counter() - stage_start

    result, tracks, face_keys = _judge(info, classifiers, settings, ensemble, sampled,
                                       detections_per_frame, crops, timings, report)
    result.warnings = decode_warnings(stats, len(sampled), expected)
    if keep_images:
        _attach_gallery_images(result, stills, crops, face_keys)

    # Stage 5 (optional): the whole clip with interpolated boxes, as H.264.
    if annotated_path is not None:
        t0 = time.perf_counter()
        boxes_at = _faces_at_frame(result, tracks)
        total = max(info.frame_count, 1)

        def faces_at(index: int) -> list[FaceBox]:
            report("annotate", index / total)
            return boxes_at(index)

        try:
            written = write_annotated_video(path, annotated_path, faces_at, info=info,
                                            max_long_side=settings.annotated_long_side or None)
            result.annotated_video = str(written["path"])
        except Exception as error:  # noqa: BLE001 - the verdict above stands without the video
            result.warnings.append(f"the annotated video could not be written "
                                   f"({first_line(error)}); the "
                                   "verdict, timeline and reports do not depend on it")
        timings["annotate"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started
    return result


def _judge(info, classifiers: Sequence[Classifier], settings: AnalysisSettings,
           ensemble: EnsembleCard | None, sampled: list[tuple[int, float]],
           detections_per_frame: list, crops: dict, timings: dict[str, float],
           report: _Progress) -> tuple[AnalysisResult, list, list[tuple[int, int]]]:
    """The stages after detection, the same for a clip's sampled frames and a photo's one
    frame: persons, every model on every face, verdicts. Returns the result, the tracks and
    each face's (frame_index, detection position)."""
    # Stage 2: persons. Each face that survives tracking gets a person id.
    t0 = time.perf_counter()
    tracks = link_tracks(detections_per_frame)
    time_of = dict(sampled)
    detections_by_frame = dict(detections_per_frame)
    faces: list[FaceResult] = []
    face_keys: list[tuple[int, int]] = []
    track_positions: list[int] = []
    for track in tracks:
        for track_position, frame_index in enumerate(sorted(track.detections)):
            track_positions.append(track_position)
            detection = track.detections[frame_index]
            position = next(i for i, d in enumerate(detections_by_frame[frame_index])
                            if d is detection)
            face_keys.append((frame_index, position))
            faces.append(FaceResult(
                frame_index=frame_index, time=time_of[frame_index], person_id=track.id,
                box=tuple(float(v) for v in detection.box), confidence=float(detection.confidence),
                raw={}, scores={}))
    timings["track"] = time.perf_counter() - t0

    # Stage 3: every classifier on every face, and on its views where settings.views_on asks.
    names = [c.name for c in classifiers]
    mix = choose_ensemble(names, ensemble)
    views = parse_views(settings.views)
    viewed = viewed_models(names, mix, settings)
    # A photo has one face a person: it is seen every way.
    turns = (view_turns(track_positions, views)
             if settings.views_per_face == "one" and info.kind != "image" else None)
    model_seconds: dict[str, float] = {}
    for m, classifier in enumerate(classifiers):
        t0 = time.perf_counter()
        model_views = views if classifier.name in viewed else ()
        view_names = (ORIGINAL, *model_views)
        if faces:
            batch = np.stack([crops[(fi, d, classifier.input_size)] for fi, d in face_keys])
            raw_views = predict_views(classifier, batch, model_views, turns)
            raw = np.nanmean(raw_views, axis=0)   # NaN: a view the face was not seen in
            card = classifier.card
            calibrated = np.atleast_1d(verdicts.calibrate(raw, card.threshold, card.temperature))
            calibrated_views = np.atleast_2d(
                verdicts.calibrate(raw_views, card.threshold, card.temperature))
            for i, (face, r, p) in enumerate(zip(faces, raw, calibrated)):
                face.raw[classifier.name] = float(r)
                face.scores[classifier.name] = float(p)
                face.views[classifier.name] = {v: float(calibrated_views[k, i])
                                               for k, v in enumerate(view_names)
                                               if not np.isnan(raw_views[k, i])}
        model_seconds[classifier.name] = time.perf_counter() - t0
        report("classify", (m + 1) / len(classifiers))
    # Every model of the ensemble scored the views (viewed_models), so the ensemble has them too.
    ensemble_views = (ORIGINAL, *views)
    for face in faces:
        face.scores[ENSEMBLE] = mix.face_score(face.scores)
        face.views[ENSEMBLE] = {v: mix.face_score({n: face.views[n][v] for n in mix.weights})
                                for v in ensemble_views
                                if all(v in face.views[n] for n in mix.weights)}
    timings["classify"] = sum(model_seconds.values())

    # Stage 4: persons and video verdicts per model and for the ensemble.
    t0 = time.perf_counter()
    primary = ENSEMBLE if len(classifiers) > 1 or mix.kind == "fitted" else names[0]
    verdict_by_model = video_verdicts(faces, names, settings, model_seconds)
    persons: list[PersonResult] = []
    for track in tracks:
        person_faces = [f for f in faces if f.person_id == track.id]
        scores = {
            name: float(verdicts.aggregate_person([f.scores[name] for f in person_faces],
                                                  rule=settings.rule))
            for name in [*names, ENSEMBLE]
        }
        persons.append(PersonResult(
            id=track.id, frames=[f.frame_index for f in person_faces], scores=scores,
            label=verdicts.label_for(scores[primary], settings.band)))
    timings["verdict"] = time.perf_counter() - t0

    result = AnalysisResult(
        video=info, settings=settings, models=names, primary=primary, sampled=sampled,
        faces=faces, persons=persons, verdicts=verdict_by_model, timings=timings,
        ensemble={"kind": mix.kind, "weights": mix.weights})
    return result, tracks, face_keys


def viewed_models(names: Sequence[str], mix, settings: AnalysisSettings) -> set[str]:
    """The models that score the views: with views_on "verdict" those whose scores make the
    primary verdict (the ensemble's members, or the one model), else every model."""
    if settings.views_on == "all":
        return set(names)
    return set(mix.weights)


def video_verdicts(faces: Sequence[FaceResult], names: Sequence[str], settings: AnalysisSettings,
                   model_seconds: dict[str, float] | None = None) -> dict[str, ModelVerdict]:
    """Each model's and the ensemble's verdict on the clip from its scored faces: P(fake) by the
    settings' rule, its label at the settings' band, UNCERTAIN with the reasons where the views
    disagree or the faces are too small. Also what re-decides a stored report at another band."""
    model_seconds = model_seconds or {}
    views = parse_views(settings.views)
    small = small_faces_reason(faces, settings.small_face_px)
    verdict_by_model: dict[str, ModelVerdict] = {}
    for name in [*names, ENSEMBLE]:
        seconds = model_seconds.get(name, sum(model_seconds.values()))
        if not faces:
            verdict_by_model[name] = ModelVerdict(name, None, NO_FACE, seconds)
            continue
        probability = float(verdicts.aggregate_video(
            _per_person(faces, lambda f: f.scores[name]), rule=settings.rule))
        label = verdicts.label_for(probability, settings.band)
        reasons = []
        if label != "UNCERTAIN":
            # Each view read from the faces seen in it: every face, or with views_per_face "one"
            # those whose turn it was, the faces seen only as found among them.
            checked = (ORIGINAL, *views) if settings.views_per_face == "one" else views
            in_view = {view: [f for f in faces if view in f.views.get(name, {})]
                       for view in checked}
            disagree = disagreement(label, {
                view: float(verdicts.aggregate_video(
                    _per_person(seen, lambda f: f.views[name][view]), rule=settings.rule))
                for view, seen in in_view.items() if seen}, settings.band)
            if disagree:
                reasons.append(disagree)
            if small:
                reasons.append(small)
        verdict_by_model[name] = ModelVerdict(
            name, probability, "UNCERTAIN" if reasons else label, seconds, reasons)
    return verdict_by_model


def _per_person(faces: Sequence[FaceResult], score: Callable[[FaceResult], float]
                ) -> dict[int, dict[int, float]]:
    per_person: dict[int, dict[int, float]] = {}
    for face in faces:
        per_person.setdefault(face.person_id, {})[face.frame_index] = score(face)
    return per_person


def small_faces_reason(faces: Sequence[FaceResult], small_face_px: int) -> str | None:
    """Why the faces are too small to judge, when more than half of them are narrower than
    `small_face_px` in the video's own pixels; else None."""
    if not faces or small_face_px <= 0:
        return None
    widths = np.array([min(f.box[2] - f.box[0], f.box[3] - f.box[1]) for f in faces])
    small = int(np.sum(widths < small_face_px))
    if small * 2 <= len(faces):
        return None
    return (f"{small} of the {len(faces)} faces are smaller than {small_face_px} px "
            f"(median {float(np.median(widths)):.0f} px): too little detail to judge")


def _attach_gallery_images(result: AnalysisResult, stills, crops, face_keys) -> None:
    by_frame: dict[int, list[FaceResult]] = {}
    for face in result.faces:
        by_frame.setdefault(face.frame_index, []).append(face)
    largest = max(size for (_, _, size) in crops) if crops else None
    for frame_index, (image, scale) in stills.items():
        boxes = [
            FaceBox(box=tuple(v * scale for v in f.box),
                    label=verdicts.label_for(f.scores[result.primary], result.settings.band),
                    score=f.scores[result.primary], person_id=f.person_id)
            for f in by_frame.get(frame_index, [])
        ]
        result.stills[frame_index] = draw_faces(image, boxes)
    for face, (frame_index, position) in zip(result.faces, face_keys):
        crop = crops[(frame_index, position, largest)]
        result.crops[(frame_index, face.person_id)] = cv2.resize(
            crop, (GALLERY_CROP_SIZE, GALLERY_CROP_SIZE), interpolation=cv2.INTER_AREA)


def _faces_at_frame(result: AnalysisResult, tracks) -> Callable[[int], list[FaceBox]]:
    """Boxes for any frame of the clip: each track's box interpolated between its detections,
    labelled with that person's score at the nearest sampled frame."""
    score_at: dict[int, list[tuple[int, float]]] = {}
    for face in result.faces:
        score_at.setdefault(face.person_id, []).append((face.frame_index, face.scores[result.primary]))

    def faces_at(frame_index: int) -> list[FaceBox]:
        boxes = []
        for track in tracks:
            box = track.box_at(frame_index)
            if box is None:
                continue
            _, score = min(score_at[track.id], key=lambda item: abs(item[0] - frame_index))
            boxes.append(FaceBox(box=box, label=verdicts.label_for(score, result.settings.band),
                                 score=score, person_id=track.id))
        return boxes

    return faces_at
