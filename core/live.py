"""Live analysis of a camera stream: boxes drawn on every frame, detection and classification
on as many frames as the CPU allows.

MTCNN alone costs tens of milliseconds a frame on a laptop CPU and the classifiers more, so the
frame callback cannot wait for them without dropping to a few frames per second. Instead the
callback only draws the newest known boxes and leaves the frame in a one-frame slot; one worker
thread takes whatever frame is in the slot when it is free (older ones are simply replaced, never
queued, so results never lag further and further behind) and publishes new boxes and scores.
Between two analyses the boxes stay where they were last seen.
"""
from __future__ import annotations

import math
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .faces.detector import FaceDetector, square_crop
from .faces.tracking import iou
from .media.annotate import FaceBox, draw_faces
from .models.model_store import Classifier
from .verdicts import verdict as verdicts
from .verdicts.ensemble import EnsembleCard
from .verdicts.ensemble import choose as choose_ensemble
from .verdicts.views import ORIGINAL, disagreement, parse_views, predict_views

FACE_ONLY_LABEL = "FACE"        # the label boxes get when no classifier is loaded
RATE_WINDOW_SECONDS = 2.0       # frames per second are counted over this much recent time
LATENCY_SAMPLES = 30
_ID_MATCH_IOU = 0.3
# Boxes are moved along their last measured velocity between analyses, but not further than this
# much frame time ahead of the analysis: beyond that a guess is worse than a box left in place.
MAX_EXTRAPOLATION_SECONDS = 0.5


@dataclass(frozen=True)
class LiveSnapshot:
    """What the page shows about a live session, copied out under the analyzer's lock."""
    frames_shown: int               # frames the callback returned
    frames_analyzed: int            # frames the worker ran detection (and classification) on
    shown_fps: float                # callback rate over the last RATE_WINDOW_SECONDS
    analysis_fps: float             # worker analyses per second over the same span
    latency_ms: float | None        # mean time from a frame entering the slot to its boxes showing
    faces: tuple[FaceBox, ...]      # the boxes being drawn now
    verdict_probability: float | None   # mean ensemble P(fake) of the faces in the window
    verdict_label: str | None       # REAL / FAKE / UNCERTAIN, None with no face in the window
    reasons: tuple[str, ...]        # why UNCERTAIN although P(fake) is outside the band
    window_faces: int               # face scores the rolling verdict is made of
    window_seconds: float
    models: tuple[str, ...]
    running: bool
    error: str | None               # the last analysis failure, as one line

    def to_dict(self) -> dict:
        return {
            "frames_shown": self.frames_shown,
            "frames_analyzed": self.frames_analyzed,
            "shown_fps": self.shown_fps,
            "analysis_fps": self.analysis_fps,
            "latency_ms": self.latency_ms,
            "faces": [{"box": f.box, "label": f.label, "score": f.score, "person_id": f.person_id}
                      for f in self.faces],
            "verdict_probability": self.verdict_probability,
            "verdict_label": self.verdict_label,
            "reasons": list(self.reasons),
            "window_faces": self.window_faces,
            "window_seconds": self.window_seconds,
            "models": list(self.models),
            "running": self.running,
            "error": self.error,
        }


@dataclass
class _Pending:
    image: np.ndarray
    timestamp: float
    submitted: float                # monotonic clock when the frame entered the slot


@dataclass
class _RateMeter:
    """Events per second over a sliding span of wall-clock time."""
    span: float = RATE_WINDOW_SECONDS
    times: deque = field(default_factory=deque)

    def tick(self, now: float) -> None:
        self.times.append(now)
        while self.times and now - self.times[0] > self.span:
            self.times.popleft()

    def rate(self, now: float) -> float:
        while self.times and now - self.times[0] > self.span:
            self.times.popleft()
        if len(self.times) < 2:
            return 0.0
        elapsed = now - self.times[0]
        # Counted up to now, not up to the last event, so a stalled stream falls towards zero.
        return (len(self.times) - 1) / elapsed if elapsed > 0 else 0.0


class FrameScorer:
    """One frame's faces and every model's verdict on them: what the live analysis thread runs on
    each frame it takes, here with the models in this process. A scorer is any callable with
    this signature (the app's runs in a worker process, serving)."""

    def __init__(self, detector: FaceDetector, classifiers: Sequence[Classifier] = (),
                 band: float = 0.1, *, margin: float = 0.2, ensemble: EnsembleCard | None = None,
                 views: str = "", views_per_face: str = "all"):
        self.detector = detector
        self.classifiers = list(classifiers)
        self.band = float(band)
        self.margin = float(margin)
        self.ensemble = ensemble
        self.views = parse_views(views)
        # "one": each frame's faces seen one way, the ways in turn frame after frame (as found,
        # mirrored, re-encoded, ...), as a clip's analysis takes them along a person's faces.
        self.views_per_face = views_per_face
        self._frames_scored = 0

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classifiers)

    def __call__(self, image: np.ndarray
                 ) -> tuple[list[FaceBox], list[float], list[tuple[float, ...]]]:
        """Boxes (person ids not yet assigned), the ensemble score of each face (the mean over
        its views, as in the video analysis) and its ensemble score in each other view (NaN for
        a view it was not scored in, with views_per_face "one")."""
        detections = self.detector.detect(image)
        if not detections:
            return [], [], []
        if not self.classifiers:
            return [FaceBox(tuple(d.box), FACE_ONLY_LABEL, float(d.confidence), 0)
                    for d in detections], [], []
        crops_by_size = {
            size: np.stack([square_crop(image, d.box, margin=self.margin, size=size)
                            for d in detections])
            for size in {c.input_size for c in self.classifiers}
        }
        mix = choose_ensemble(list(self.model_names), self.ensemble)
        turns = None
        if self.views_per_face == "one" and self.views:
            turns = np.full(len(detections), self._frames_scored % (1 + len(self.views)))
        self._frames_scored += 1
        calibrated, calibrated_views = {}, {}
        for classifier in self.classifiers:
            # Only the ensemble's score is shown live: a model outside it needs no views.
            views = self.views if classifier.name in mix.weights else ()
            raw = predict_views(classifier, crops_by_size[classifier.input_size], views, turns)
            card = classifier.card
            calibrated[classifier.name] = np.atleast_1d(verdicts.calibrate(
                np.nanmean(raw, axis=0), card.threshold, card.temperature))
            if views:
                calibrated_views[classifier.name] = np.atleast_2d(verdicts.calibrate(
                    raw[1:], card.threshold, card.temperature))
        scores = [mix.face_score({name: values[i] for name, values in calibrated.items()})
                  for i in range(len(detections))]
        view_scores = [tuple(mix.face_score({name: calibrated_views[name][v, i]
                                             for name in mix.weights})
                             for v in range(len(self.views)))
                       for i in range(len(detections))]
        faces = [FaceBox(tuple(float(v) for v in d.box), verdicts.label_for(p, self.band),
                         float(p), 0)
                 for d, p in zip(detections, scores)]
        return faces, [float(p) for p in scores], view_scores


class LiveAnalyzer:
    """Frames in, annotated frames out, at the caller's pace; analysis runs on one worker thread.

    detector: a shared `FaceDetector`. classifiers: loaded models, possibly none (then boxes are
    labelled FACE and scored with the detector's confidence). band: the UNCERTAIN band of
    `verdict.label_for`. window_seconds: the span of frame timestamps the rolling verdict covers.
    margin: crop margin, as in the video analysis. hold_seconds: how long (in frame time) a face
    the detector stops finding stays drawn. `process` may be called from any one thread;
    `snapshot` from any thread. views: other views of each face scored beside it
    (core.verdicts.views), as in `AnalysisSettings.views`.
    """

    def __init__(self, detector: FaceDetector | None = None,
                 classifiers: Sequence[Classifier] = (), band: float = 0.1,
                 window_seconds: float = 3.0, *, margin: float = 0.2, hold_seconds: float = 0.3,
                 ensemble: EnsembleCard | None = None, views: str = "",
                 views_per_face: str = "all", clock: Callable[[], float] = time.monotonic,
                 scorer: Callable[[np.ndarray], tuple] | None = None,
                 model_names: Sequence[str] | None = None):
        if not 0.0 <= band < 0.5:
            raise ValueError(f"band must be in [0, 0.5), got {band}")
        if not window_seconds > 0:
            raise ValueError(f"window_seconds must be positive, got {window_seconds}")
        if scorer is None:
            if detector is None:
                raise ValueError("a LiveAnalyzer needs a detector (and models) or a scorer")
            scorer = FrameScorer(detector, classifiers, band, margin=margin, ensemble=ensemble,
                                 views=views, views_per_face=views_per_face)
        self._score = scorer
        self.model_names = tuple(model_names if model_names is not None
                                 else (c.name for c in classifiers))
        self.band = float(band)
        self.window_seconds = float(window_seconds)
        self.hold_seconds = float(hold_seconds)
        self.views = parse_views(views)
        self.views_per_face = views_per_face
        self._clock = clock

        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)      # worker waits for a frame or stop
        self._published = threading.Condition(self._lock)  # waiters for analyses
        self._pending: _Pending | None = None
        self._busy = False
        self._stopping = False

        self._faces: tuple[FaceBox, ...] = ()
        # (frame timestamp, ensemble P(fake), ensemble P(fake) of each other view of the face)
        self._window: deque[tuple[float, float, tuple[float, ...]]] = deque()
        self._frames_shown = 0
        self._frames_analyzed = 0
        self._shown_rate = _RateMeter()
        self._analysis_rate = _RateMeter()
        self._latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self._error: str | None = None
        self._next_person_id = 1
        # (face, frame timestamp last seen, box velocity in px per second of frame time)
        self._tracks: list[tuple[FaceBox, float, np.ndarray]] = []

        self._worker = threading.Thread(target=self._run, name="live-analysis", daemon=True)
        self._worker.start()

    # -- the frame callback side ------------------------------------------------------------

    def process(self, image_rgb: np.ndarray, timestamp: float | None = None) -> np.ndarray:
        """Hand the frame to the worker (replacing any frame it has not taken yet) and return a
        copy with the latest known boxes drawn. `timestamp` is the frame's time in seconds
        (defaults to the clock); the rolling verdict window is measured in it."""
        if not isinstance(image_rgb, np.ndarray) or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
            raise ValueError("process expects an H x W x 3 RGB image")
        now = self._clock()
        frame_time = now if timestamp is None else float(timestamp)
        # A private copy: callers (PyAV, camera drivers) may reuse their buffer for the next frame.
        pending = _Pending(np.array(image_rgb, dtype=np.uint8, copy=True), frame_time, now)
        with self._lock:
            if not self._stopping:
                self._pending = pending
                self._wake.notify()
            faces = self._boxes_at(frame_time)
            self._frames_shown += 1
            self._shown_rate.tick(now)
        return draw_faces(image_rgb, faces)

    def boxes_at(self, timestamp: float) -> list[FaceBox]:
        """The boxes `process` draws on a frame of this timestamp: each known face moved along
        its velocity for the frame time since it was seen (at most MAX_EXTRAPOLATION_SECONDS)."""
        with self._lock:
            return self._boxes_at(timestamp)

    def _boxes_at(self, timestamp: float) -> list[FaceBox]:
        boxes = []
        for face, seen, velocity in self._tracks:
            ahead = min(max(timestamp - seen, 0.0), MAX_EXTRAPOLATION_SECONDS)
            box = tuple(float(v) for v in np.asarray(face.box) + velocity * ahead)
            boxes.append(FaceBox(box, face.label, face.score, face.person_id))
        return boxes

    # -- the worker side ----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                while self._pending is None and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                pending, self._pending = self._pending, None
                self._busy = True
            try:
                faces, scores, view_scores = self._score(pending.image)
                error = None
            except Exception as exc:  # one bad frame must not end the live session
                faces, scores, view_scores = None, (), ()
                error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            done = self._clock()
            with self._lock:
                if faces is not None:
                    self._faces = self._tracked(faces, pending.timestamp)
                    for score, views in zip(scores, view_scores):
                        self._window.append((pending.timestamp, score, views))
                    self._latencies.append(done - pending.submitted)
                self._error = error
                newest = max(pending.timestamp, self._window[-1][0] if self._window else -math.inf)
                while self._window and newest - self._window[0][0] > self.window_seconds:
                    self._window.popleft()
                self._frames_analyzed += 1
                self._analysis_rate.tick(done)
                self._busy = False
                self._published.notify_all()

    def _tracked(self, faces: list[FaceBox], timestamp: float) -> tuple[FaceBox, ...]:
        """Give each face the id of the known face it overlaps most, else a new id, so a person
        keeps their number while they move; a known face MTCNN missed this time stays on screen
        for up to `hold_seconds` of frame time, so one missed detection does not make the box
        flicker. Called under the lock."""
        known = self._tracks
        # Matched against where each known face is predicted to be now, so fast motion still
        # overlaps.
        predicted = self._boxes_at(timestamp)
        pairs = sorted(((iou(face.box, guess.box), f, o)
                        for f, face in enumerate(faces) for o, guess in enumerate(predicted)),
                       reverse=True)
        ids: dict[int, int] = {}
        velocities: dict[int, np.ndarray] = {}
        matched: set[int] = set()
        for overlap, f, o in pairs:
            if overlap < _ID_MATCH_IOU:
                break
            if f in ids or o in matched:
                continue
            old, seen, _ = known[o]
            ids[f] = old.person_id
            elapsed = timestamp - seen
            if elapsed > 0:
                velocities[f] = (np.asarray(faces[f].box) - np.asarray(old.box)) / elapsed
            matched.add(o)
        tracks = []
        for f, face in enumerate(faces):
            if f not in ids:
                ids[f] = self._next_person_id
                self._next_person_id += 1
            tracks.append((FaceBox(face.box, face.label, face.score, ids[f]), timestamp,
                           velocities.get(f, np.zeros(4))))
        tracks += [track for o, track in enumerate(known)
                   if o not in matched and 0 <= timestamp - track[1] <= self.hold_seconds]
        self._tracks = tracks
        return tuple(face for face, _, _ in tracks)

    # -- reading and stopping -----------------------------------------------------------------

    def snapshot(self) -> LiveSnapshot:
        now = self._clock()
        with self._lock:
            scores = [score for _, score, _ in self._window]
            probability = float(np.mean(scores)) if scores else None
            label = (verdicts.label_for(probability, self.band)
                     if probability is not None else None)
            reasons: tuple[str, ...] = ()
            if label in ("REAL", "FAKE") and self.views:
                # As in the video analysis: a verdict one view of the faces turns is UNCERTAIN.
                # NaN: a face not seen in that view (views_per_face "one"); there, a face seen
                # in none of them was seen as found, and that way is read too.
                in_view = np.array([views for _, _, views in self._window], dtype=float)
                read = {view: in_view[:, v] for v, view in enumerate(self.views)}
                if self.views_per_face == "one":
                    read = {ORIGINAL: np.where(np.isnan(in_view).all(axis=1), scores, np.nan),
                            **read}
                disagree = disagreement(label, {view: float(np.nanmean(values))
                                                for view, values in read.items()
                                                if not np.isnan(values).all()}, self.band)
                if disagree:
                    reasons, label = (disagree,), "UNCERTAIN"
            return LiveSnapshot(
                frames_shown=self._frames_shown,
                frames_analyzed=self._frames_analyzed,
                shown_fps=self._shown_rate.rate(now),
                analysis_fps=self._analysis_rate.rate(now),
                latency_ms=(1000.0 * float(np.mean(self._latencies))) if self._latencies else None,
                faces=self._faces,
                verdict_probability=probability,
                verdict_label=label,
                reasons=reasons,
                window_faces=len(scores),
                window_seconds=self.window_seconds,
                models=self.model_names,
                running=self._worker.is_alive() and not self._stopping,
                error=self._error,
            )

    def wait_for_analyses(self, count: int, timeout: float | None = None) -> bool:
        """Block until at least `count` frames have been analysed in all; False on timeout."""
        with self._lock:
            return self._published.wait_for(lambda: self._frames_analyzed >= count, timeout)

    def wait_until_idle(self, timeout: float | None = None) -> bool:
        """Block until the worker has analysed every frame it was handed (the slot is empty and
        nothing is in flight); False on timeout."""
        with self._lock:
            return self._published.wait_for(
                lambda: (self._pending is None and not self._busy) or self._stopping, timeout)

    @property
    def running(self) -> bool:
        return self._worker.is_alive()

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop the worker after its current analysis; frames processed later are drawn but not
        analysed."""
        with self._lock:
            self._stopping = True
            self._pending = None
            self._wake.notify_all()
            self._published.notify_all()
        if self._worker is not threading.current_thread():
            self._worker.join(timeout)

    def __enter__(self) -> "LiveAnalyzer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LiveSession:
    """One viewer's live stream: starts a `LiveAnalyzer` with the first frame, stops it when the
    stream stops, and keeps the last snapshot for the page to show afterwards.

    The frame callback runs on the streaming library's thread and the page on Streamlit's, so
    every method is safe to call from either. `make_analyzer` is called without arguments and
    must return a new, running analyzer; `configure` swaps it (the running analyzer is stopped,
    the next frame starts one from the new factory) when the page's settings change.
    """

    def __init__(self, make_analyzer: Callable[[], LiveAnalyzer], config_key=None):
        self._lock = threading.Lock()
        self._make_analyzer = make_analyzer
        self._config_key = config_key
        self._analyzer: LiveAnalyzer | None = None
        self._last: LiveSnapshot | None = None

    def configure(self, make_analyzer: Callable[[], LiveAnalyzer], config_key) -> None:
        with self._lock:
            self._make_analyzer = make_analyzer
            if config_key == self._config_key:
                return
            self._config_key = config_key
            retired, self._analyzer = self._analyzer, None
        if retired is not None:
            self._retire(retired)

    def process(self, image_rgb: np.ndarray, timestamp: float | None = None) -> np.ndarray:
        with self._lock:
            if self._analyzer is None:
                self._analyzer = self._make_analyzer()
                # A viewer who closes the tab never presses STOP: the worker ends when the
                # session object is collected.
                weakref.finalize(self, self._analyzer.close)
            analyzer = self._analyzer
        return analyzer.process(image_rgb, timestamp)

    def snapshot(self) -> LiveSnapshot | None:
        """The running analyzer's snapshot, else the last one taken when it stopped, else None."""
        with self._lock:
            analyzer, last = self._analyzer, self._last
        return analyzer.snapshot() if analyzer is not None else last

    @property
    def active(self) -> bool:
        with self._lock:
            return self._analyzer is not None

    def stop(self) -> None:
        with self._lock:
            retired, self._analyzer = self._analyzer, None
        if retired is not None:
            self._retire(retired)

    def _retire(self, analyzer: LiveAnalyzer) -> None:
        analyzer.close()
        final = analyzer.snapshot()
        with self._lock:
            self._last = final
