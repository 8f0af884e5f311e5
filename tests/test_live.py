"""LiveAnalyzer with real MTCNN and real (tiny) Keras models whose outputs are pinned by their head
bias, so the scores, the ensemble and the rolling verdict have known values."""
import gc
import time

import numpy as np
import pytest
from skimage.data import astronaut

from core.faces.detector import FaceDetector
from core.faces.tracking import iou
from core.live import FACE_ONLY_LABEL, MAX_EXTRAPOLATION_SECONDS, LiveAnalyzer, LiveSession
from core.models.model_store import load_classifier
from tests.conftest import make_tiny_model

WIDTH, HEIGHT = 640, 480
# The astronaut's face on the photo, and the head-and-shoulders square around it we paste.
FACE_BOX = (180.0, 62.0, 266.0, 172.0)
HEAD = (80, 0, 380, 300)
# Raw P(fake) the two tiny models always give, and the ensemble of their calibrated outputs.
FIXED_OUTPUTS = {"tiny_a": 0.9, "tiny_b": 0.5}
ENSEMBLE_P = 0.7
WAIT = 60.0   # seconds; generous because the test machine's two cores are shared


def background(seed=0):
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = np.stack([60 + 80 * xs / WIDTH, 90 + 60 * ys / HEIGHT, 120 + 0 * xs], axis=-1)
    return np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)


def face_frame(left=170, top=90):
    """A 640x480 frame with the astronaut's head pasted at (left, top), and her face's box."""
    frame = background()
    frame[top:top + HEAD[3] - HEAD[1], left:left + HEAD[2] - HEAD[0]] = \
        astronaut()[HEAD[1]:HEAD[3], HEAD[0]:HEAD[2]]
    dx, dy = left - HEAD[0], top - HEAD[1]
    return frame, (FACE_BOX[0] + dx, FACE_BOX[1] + dy, FACE_BOX[2] + dx, FACE_BOX[3] + dy)


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


@pytest.fixture(scope="module")
def classifiers(tmp_path_factory):
    folder = tmp_path_factory.mktemp("live_models")
    loaded = []
    for name, p in FIXED_OUTPUTS.items():
        card = make_tiny_model(folder, "vgg16", name=name, constant_output=p)
        loaded.append(load_classifier(card))
    return loaded


@pytest.fixture
def analyzer(detector, classifiers):
    live = LiveAnalyzer(detector, classifiers, band=0.1, window_seconds=3)
    yield live
    live.close()


def test_face_gets_a_box_score_and_rolling_verdict(analyzer):
    frame, expected = face_frame()
    first = analyzer.process(frame, timestamp=0.0)
    # Nothing is known before the worker has run: the first frame comes back undrawn.
    assert np.array_equal(first, frame)
    assert analyzer.wait_for_analyses(1, timeout=WAIT)

    shown = analyzer.process(frame, timestamp=0.04)
    snap = analyzer.snapshot()

    assert len(snap.faces) == 1
    face = snap.faces[0]
    assert iou(face.box, expected) > 0.5, (face.box, expected)
    assert face.score == pytest.approx(ENSEMBLE_P, abs=1e-4)
    assert face.label == "FAKE"
    assert snap.verdict_probability == pytest.approx(ENSEMBLE_P, abs=1e-4)
    assert snap.verdict_label == "FAKE"
    assert snap.window_faces >= 1
    assert snap.models == ("tiny_a", "tiny_b")
    assert snap.frames_shown == 2 and snap.frames_analyzed >= 1
    assert snap.latency_ms is not None and snap.latency_ms > 0
    assert snap.error is None
    # The box is drawn in the FAKE colour (red) on the returned frame, not on the input.
    x1, y1, x2, y2 = (int(round(v)) for v in face.box)
    edge = shown[(y1 + y2) // 2, x1]
    assert tuple(edge) == (220, 0, 0)
    assert not np.array_equal(shown, frame)
    assert np.array_equal(frame, face_frame()[0])


def test_frames_without_a_face_give_no_box_and_no_verdict(analyzer):
    frame = background(seed=3)
    analyzer.process(frame, timestamp=0.0)
    assert analyzer.wait_for_analyses(1, timeout=WAIT)

    shown = analyzer.process(frame, timestamp=0.04)
    snap = analyzer.snapshot()

    assert snap.faces == ()
    assert snap.verdict_probability is None and snap.verdict_label is None
    assert snap.window_faces == 0
    assert np.array_equal(shown, frame)


def test_boxes_follow_the_newest_frame_and_keep_the_person_id(analyzer):
    frame, _ = face_frame(left=60, top=60)
    analyzer.process(frame, timestamp=0.0)
    assert analyzer.wait_until_idle(timeout=WAIT)
    first = analyzer.snapshot().faces
    assert len(first) == 1

    # Several frames arrive while the worker is busy; only the newest one must be analysed.
    moved, expected = face_frame(left=80, top=70)
    empty = background(seed=1)
    for i in range(20):   # far faster than one MTCNN pass each
        analyzer.process(empty, timestamp=0.1 + 0.001 * i)
    analyzer.process(moved, timestamp=0.2)
    assert analyzer.wait_until_idle(timeout=WAIT)
    snap = analyzer.snapshot()

    assert snap.frames_shown == 22
    assert snap.frames_analyzed < snap.frames_shown   # older frames were dropped, not queued
    assert len(snap.faces) == 1
    assert iou(snap.faces[0].box, expected) > 0.5
    # The empty frames in between came within hold_seconds: the person kept their number.
    assert snap.faces[0].person_id == first[0].person_id


def test_between_analyses_boxes_move_on_along_the_face_velocity(analyzer):
    for left, timestamp in ((60, 0.0), (80, 0.2)):
        frame, _ = face_frame(left=left, top=80)
        analyzer.process(frame, timestamp=timestamp)
        assert analyzer.wait_until_idle(timeout=WAIT)
    measured = analyzer.snapshot().faces[0].box
    vx = (measured[0] - analyzer.boxes_at(0.2)[0].box[0])   # 0 at the analysed frame itself
    assert vx == pytest.approx(0.0)

    ahead = analyzer.boxes_at(0.3)[0].box
    far = analyzer.boxes_at(5.0)[0].box
    # The face moved ~20 px right in 0.2 s: ~100 px/s, so ~10 px 0.1 s later; capped later on.
    assert ahead[0] - measured[0] == pytest.approx(10.0, abs=4.0)
    assert far[0] - measured[0] == pytest.approx(100.0 * MAX_EXTRAPOLATION_SECONDS, abs=20.0)
    assert ahead[1] == pytest.approx(measured[1], abs=3.0)   # no vertical motion


def test_rolling_verdict_forgets_faces_older_than_the_window(analyzer):
    frame, _ = face_frame()
    empty = background(seed=5)
    analyzer.process(frame, timestamp=10.0)
    assert analyzer.wait_until_idle(timeout=WAIT)
    analyzer.process(empty, timestamp=12.5)       # inside the 3 s window: the face still counts
    assert analyzer.wait_until_idle(timeout=WAIT)
    inside = analyzer.snapshot()
    analyzer.process(empty, timestamp=13.5)       # 3.5 s after the face: it has left the window
    assert analyzer.wait_until_idle(timeout=WAIT)
    after = analyzer.snapshot()

    assert inside.faces == () and inside.verdict_label == "FAKE" and inside.window_faces == 1
    assert after.verdict_label is None and after.window_faces == 0


def test_callback_stays_cheap_while_the_worker_is_busy(analyzer):
    frame, _ = face_frame()
    analyzer.process(frame, timestamp=0.0)
    assert analyzer.wait_until_idle(timeout=WAIT)

    durations = []
    for i in range(40):
        start = time.perf_counter()
        analyzer.process(frame, timestamp=0.04 * (i + 1))
        durations.append(time.perf_counter() - start)
        time.sleep(0.005)
    snap = analyzer.snapshot()

    # Drawing and a copy: a few ms, far below one MTCNN pass, even on loaded cores.
    assert float(np.median(durations)) < 0.02, durations
    assert snap.frames_shown == 41
    assert snap.shown_fps > 20


def test_without_models_faces_are_labelled_face_and_no_verdict_is_given(detector):
    frame, expected = face_frame()
    with LiveAnalyzer(detector, [], band=0.1) as live:
        live.process(frame, timestamp=0.0)
        assert live.wait_for_analyses(1, timeout=WAIT)
        snap = live.snapshot()

    assert len(snap.faces) == 1
    assert snap.faces[0].label == FACE_ONLY_LABEL
    assert iou(snap.faces[0].box, expected) > 0.5
    assert snap.faces[0].score >= 0.95            # the detector's confidence
    assert snap.verdict_label is None and snap.models == ()


def test_close_stops_the_worker_and_later_frames_are_not_analysed(analyzer):
    frame, _ = face_frame()
    analyzer.process(frame, timestamp=0.0)
    assert analyzer.wait_for_analyses(1, timeout=WAIT)
    analyzer.close()

    assert not analyzer.running
    assert not analyzer.snapshot().running
    analysed = analyzer.snapshot().frames_analyzed
    shown = analyzer.process(frame, timestamp=1.0)   # still drawn with the last boxes
    time.sleep(0.3)

    assert analyzer.snapshot().frames_analyzed == analysed
    assert not np.array_equal(shown, frame)


def test_bad_arguments_are_refused(detector):
    with pytest.raises(ValueError, match="band"):
        LiveAnalyzer(detector, [], band=0.6)
    with pytest.raises(ValueError, match="window_seconds"):
        LiveAnalyzer(detector, [], window_seconds=0)
    with LiveAnalyzer(detector, []) as live:
        with pytest.raises(ValueError, match="RGB"):
            live.process(np.zeros((48, 64), np.uint8))


def test_live_session_starts_with_the_first_frame_and_keeps_the_last_snapshot(detector, classifiers):
    started = []

    def make():
        started.append(LiveAnalyzer(detector, classifiers[:1], window_seconds=3))
        return started[-1]

    session = LiveSession(make, config_key="a")
    assert session.snapshot() is None and not session.active

    frame, _ = face_frame()
    session.process(frame, 0.0)
    session.process(frame, 0.04)
    assert session.active and len(started) == 1
    assert started[0].wait_for_analyses(1, timeout=WAIT)
    session.stop()

    assert not session.active and not started[0].running
    kept = session.snapshot()
    assert kept.frames_shown == 2 and kept.frames_analyzed >= 1
    assert kept.verdict_label == "FAKE"        # tiny_a alone: P(fake) 0.9

    session.process(frame, 1.0)                # a new stream: a new analyzer, fresh counters
    assert len(started) == 2 and session.snapshot().frames_shown == 1
    session.configure(make, config_key="a")    # same settings: keeps running
    assert session.active and started[1].running
    session.configure(make, config_key="b")    # new settings: the next frame starts afresh
    assert not session.active and not started[1].running


def test_a_forgotten_live_session_stops_its_worker(detector):
    # A viewer who closes the tab never presses STOP; Streamlit just drops the session's state.
    session = LiveSession(lambda: LiveAnalyzer(detector, []), config_key=None)
    session.process(background(), 0.0)
    analyzer = session._analyzer
    assert analyzer.running
    del session
    gc.collect()
    assert not analyzer.running


def test_views_that_agree_keep_the_verdict_and_views_that_disagree_make_it_uncertain(
        detector, classifiers):
    frame, _ = face_frame()
    with LiveAnalyzer(detector, classifiers, band=0.1, views="flip,jpeg") as live:
        live.process(frame, timestamp=0.0)
        assert live.wait_for_analyses(1, timeout=WAIT)
        snap = live.snapshot()
        # Constant models score every view alike: the views agree, the verdict stands.
        assert snap.verdict_label == "FAKE" and snap.reasons == ()
        assert snap.verdict_probability == pytest.approx(ENSEMBLE_P, abs=1e-4)
        # A window whose faces read FAKE as found but REAL mirrored: UNCERTAIN, and why.
        with live._lock:
            live._window.clear()
            live._window.extend([(0.0, 0.8, (0.3, 0.8)), (0.1, 0.8, (0.3, 0.8))])
        snap = live.snapshot()
    assert snap.verdict_probability == pytest.approx(0.8)
    assert snap.verdict_label == "UNCERTAIN"
    assert len(snap.reasons) == 1 and "mirror images say REAL (0.30)" in snap.reasons[0]


def _count_crops(classifiers, monkeypatch) -> dict[str, list[int]]:
    """Each classifier's predict calls, as the number of crops in each, while it still scores."""
    seen = {c.name: [] for c in classifiers}
    for classifier in classifiers:
        real_predict = classifier.predict
        monkeypatch.setattr(classifier, "predict",
                            lambda crops, c=classifier, f=real_predict: (
                                seen[c.name].append(len(crops)), f(crops))[1])
    return seen


def test_a_model_outside_the_fitted_ensemble_scores_no_views_live(detector, classifiers,
                                                                  monkeypatch):
    from core.live import FrameScorer
    from core.verdicts.ensemble import EnsembleCard

    member, other = classifiers
    seen = _count_crops(classifiers, monkeypatch)
    scorer = FrameScorer(detector, classifiers, band=0.1, views="flip,jpeg",
                         ensemble=EnsembleCard(weights={member.name: 1.0}))
    frame, _ = face_frame()
    faces, scores, view_scores = scorer(frame)
    assert len(faces) == 1
    # The member scores the face and its two views; the model beside it the face alone.
    assert seen == {member.name: [3], other.name: [1]}
    # A constant model: its calibrated P in every view is the ensemble's (threshold 0.5, T 1).
    assert scores[0] == pytest.approx(FIXED_OUTPUTS[member.name], abs=1e-4)
    assert view_scores[0] == pytest.approx((scores[0], scores[0]), abs=1e-4)


def test_seen_one_way_live_frames_take_the_views_in_turn(detector, classifiers, monkeypatch):
    from core.live import FrameScorer
    from core.verdicts.ensemble import EnsembleCard

    member, other = classifiers
    seen = _count_crops(classifiers, monkeypatch)
    scorer = FrameScorer(detector, classifiers, band=0.1, views="flip,jpeg",
                         ensemble=EnsembleCard(weights={member.name: 1.0}), views_per_face="one")
    frame, _ = face_frame()
    read = [scorer(frame) for _ in range(4)]
    # One crop a face a frame, the ways in turn: as found, mirrored, re-encoded, as found.
    assert seen == {member.name: [1, 1, 1, 1], other.name: [1, 1, 1, 1]}
    assert [tuple(not np.isnan(v) for v in views[0]) for _, _, views in read] == [
        (False, False), (True, False), (False, True), (False, False)]
    for _, scores, views in read:
        assert scores[0] == pytest.approx(FIXED_OUTPUTS[member.name], abs=1e-4)
    # Each way is read from the faces seen in it, the faces seen as found among them.
    nan = float("nan")
    with LiveAnalyzer(detector, classifiers, band=0.1, views="flip,jpeg",
                      views_per_face="one") as live:
        for window, reason in (
                ([(0.0, 0.8, (nan, nan)), (0.1, 0.3, (0.3, nan)), (0.2, 0.8, (nan, 0.8)),
                  (0.3, 0.8, (nan, nan))], "mirror images say REAL (0.30)"),
                ([(0.0, 0.3, (nan, nan)), (0.1, 0.8, (0.8, nan)), (0.2, 0.8, (nan, 0.8)),
                  (0.3, 0.8, (nan, 0.8)), (0.4, 0.8, (0.8, nan))], "as found say REAL (0.30)"),
                ([(0.0, 0.8, (nan, nan)), (0.1, 0.8, (0.8, nan))], None)):
            with live._lock:
                live._window.clear()
                live._window.extend(window)
            snap = live.snapshot()
            if reason is None:
                assert snap.verdict_label == "FAKE" and snap.reasons == ()
            else:
                assert snap.verdict_label == "UNCERTAIN" and reason in snap.reasons[0]
