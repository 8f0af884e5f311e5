"""The whole core path on generated clips: real PyAV, real MTCNN, real (tiny, untrained) Keras models."""
from __future__ import annotations

import json
import tempfile

import av
import numpy as np
import pytest

from core.errors import (CorruptVideoError, EmptyFileError, NotAVideoError, NoVideoStreamError,
                         TooFewFramesError)
from core.faces.tracking import iou
from core.models.zoo import load_models
from core.pipeline import analyze_video, video_verdicts
from core.results import ENSEMBLE, NO_FACE
from core.robustness.band import without_views
from core.settings import AnalysisSettings
from core.verdicts import verdict as verdicts
from core.verdicts.ensemble import EnsembleCard
from tests import fixtures
from tests.conftest import make_tiny_model

# Every face seen every way: the tests below compare the ways one face is seen.
SETTINGS = AnalysisSettings(frames=8, views_per_face="all")


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("two")
    make_tiny_model(folder, "resnet50", seed=1)
    make_tiny_model(folder, "vgg16", seed=2)
    return load_models("all", folder)


@pytest.fixture(scope="module")
def face_clip(tmp_path_factory):
    return fixtures.make_face_clip(tmp_path_factory.mktemp("clip") / "face.mp4", frames=48)


@pytest.fixture(scope="module")
def face_result(face_clip, detector, two_models):
    return analyze_video(face_clip, detector, two_models, SETTINGS)


def test_face_found_in_every_sampled_frame_as_one_person(face_result):
    truth = fixtures.face_positions(frames=48)
    assert len(face_result.sampled) == 8
    assert len(face_result.faces) == 8
    assert {f.person_id for f in face_result.faces} == {0}
    for face in face_result.faces:
        assert iou(face.box, truth[face.frame_index][0]) > 0.5


def test_scores_follow_calibration_rule_and_ensemble(face_result, two_models):
    for face in face_result.faces:
        for classifier in two_models:
            expected = verdicts.calibrate(face.raw[classifier.name], classifier.card.threshold,
                                          classifier.card.temperature)
            assert face.scores[classifier.name] == pytest.approx(float(expected))
        assert face.scores[ENSEMBLE] == pytest.approx(
            np.mean([face.scores[c.name] for c in two_models]))
    for name, v in face_result.verdicts.items():
        per_person = {0: {f.frame_index: f.scores[name] for f in face_result.faces}}
        assert v.probability == pytest.approx(verdicts.aggregate_video(per_person, "confident"))
        assert v.label == verdicts.label_for(v.probability, SETTINGS.band)
    assert face_result.primary == ENSEMBLE


def test_report_json_and_csv(face_result):
    data = json.loads(face_result.to_json())
    assert data["video"]["width"] == 640 and data["video"]["height"] == 360
    assert data["verdict"]["label"] in {"REAL", "FAKE", "UNCERTAIN"}
    assert len(data["faces"]) == 8 and data["persons"][0]["id"] == 0
    assert {"probe", "decode", "detect", "track", "classify", "verdict", "total"} <= set(data["timings"])
    assert data["settings"]["frames"] == 8
    rows = face_result.faces_csv().strip().splitlines()
    assert len(rows) == 1 + 8
    header = rows[0].split(",")
    assert {"frame_index", "person_id", "x1", "p_ensemble", "raw_tiny_resnet50"} <= set(header)


def test_gallery_images_kept(face_result):
    assert sorted(face_result.stills) == [i for i, _ in face_result.sampled]
    assert all(img.dtype == np.uint8 and img.shape == (360, 640, 3) for img in face_result.stills.values())
    assert len(face_result.crops) == 8


def test_two_faces_are_two_persons(tmp_path, detector, two_models):
    clip = fixtures.make_face_clip(tmp_path / "two.mp4", frames=32, size=(960, 540), faces=2,
                                   face_size=180)
    result = analyze_video(clip, detector, two_models, SETTINGS, keep_images=False)
    assert len(result.persons) == 2
    assert {f.person_id for f in result.faces} == {0, 1}
    assert result.stills == {}


def test_no_face_is_a_verdict_not_an_error(tmp_path, detector, two_models):
    clip = fixtures.make_blank_clip(tmp_path / "blank.mp4")
    result = analyze_video(clip, detector, two_models, SETTINGS)
    assert result.no_face
    assert result.verdict.label == NO_FACE and result.verdict.probability is None
    assert json.loads(result.to_json())["no_face"] is True


@pytest.mark.parametrize("output, threshold, label, colour", [
    (0.3, 0.1, "FAKE", (220, 0, 0)),    # below 0.5, but above this model's own threshold
    (0.7, 0.9, "REAL", (0, 200, 0)),
])
def test_annotated_video_is_h264_with_boxes_in_verdict_colour(
        tmp_path, detector, face_clip, output, threshold, label, colour):
    make_tiny_model(tmp_path, "resnet50", threshold=threshold, constant_output=output)
    classifiers = load_models("all", tmp_path)
    out = tmp_path / "annotated.mp4"
    result = analyze_video(face_clip, detector, classifiers, SETTINGS, annotated_path=out)
    assert result.verdict.label == label
    assert result.annotated_video == str(out)
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = list(container.decode(stream))
    assert len(frames) == 48
    assert (frames[0].width, frames[0].height) == (640, 360)
    assert frames[0].format.name == "yuv420p"
    # Some pixel near the top edge of the face box of a frame between samples is the box colour.
    index = 5
    box = fixtures.face_positions(frames=48)[index][0]
    image = frames[index].to_ndarray(format="rgb24").astype(int)
    x1, y1, x2, y2 = (int(v) for v in box)
    region = image[max(y1 - 30, 0):y1 + 30, x1 - 30:x2 + 30].reshape(-1, 3)
    distance = np.abs(region - np.array(colour)).sum(axis=1)
    assert distance.min() < 60
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_progress_reports_named_stages_up_to_done(tmp_path, detector, face_clip, two_models):
    seen = []
    analyze_video(face_clip, detector, two_models[:1], SETTINGS, keep_images=False,
                  annotated_path=tmp_path / "a.mp4", progress=lambda s, f: seen.append((s, f)))
    stages = [s for s, _ in seen]
    assert stages[0] == "detect" and "classify" in stages and stages[-1] == "annotate"
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions)
    assert fractions[-1] == pytest.approx(1.0, abs=0.05)
    # Whole-percent steps, not one message per frame: the annotate stage spans 15 % of the bar
    # and walks all 48 frames of the clip.
    annotate = [f for s, f in seen if s == "annotate"]
    assert len(annotate) <= 16
    assert min(np.diff(annotate)) >= 0.01 - 1e-9


@pytest.mark.parametrize("maker, error", [
    (fixtures.make_empty_file, EmptyFileError),
    (fixtures.make_text_file, NotAVideoError),
    (fixtures.make_truncated_mp4, CorruptVideoError),
    (fixtures.make_audio_only, NoVideoStreamError),
    (fixtures.make_one_frame_clip, TooFewFramesError),
])
def test_bad_input_raises_typed_error_and_leaves_no_file(tmp_path, detector, two_models, maker, error):
    bad = maker(tmp_path / "bad.mp4")
    before = set(tmp_path.iterdir())
    temp_before = set(_tempdir_listing())
    with pytest.raises(error) as raised:
        analyze_video(bad, detector, two_models, SETTINGS, annotated_path=tmp_path / "out.mp4")
    message = str(raised.value)
    assert message and "\n" not in message
    assert set(tmp_path.iterdir()) == before
    assert set(_tempdir_listing()) <= temp_before


def _tempdir_listing():
    import os

    return os.listdir(tempfile.gettempdir())


def test_each_face_is_scored_in_every_view_and_its_score_is_their_mean(face_result, two_models,
                                                                        face_clip, detector):
    for face in face_result.faces:
        for classifier in two_models:
            views = face.views[classifier.name]
            assert set(views) == {"original", "flip", "jpeg"}
        assert set(face.views) == {c.name for c in two_models} | {ENSEMBLE}
    # With no other view, the face's raw score is the crop's own: the mean of one view.
    alone = analyze_video(face_clip, detector, two_models, AnalysisSettings(frames=8, views=""))
    for with_views, crop_only in zip(face_result.faces, alone.faces):
        for classifier in two_models:
            name = classifier.name
            assert crop_only.views[name] == {"original": pytest.approx(crop_only.scores[name])}
            assert with_views.views[name]["original"] == pytest.approx(
                crop_only.views[name]["original"], abs=1e-5)
            card = classifier.card
            mean_raw = np.mean([_raw(p, card.threshold, card.temperature)
                                for p in with_views.views[name].values()])
            assert with_views.raw[name] == pytest.approx(mean_raw, abs=1e-5)


def test_only_the_verdicts_models_score_the_views_unless_every_model_is_asked(
        face_result, two_models, face_clip, detector):
    member, other = (c.name for c in two_models)
    fitted = EnsembleCard(weights={member: 1.0}, threshold=0.45, temperature=1.2)
    verdict_only = analyze_video(face_clip, detector, two_models, SETTINGS, ensemble=fitted)
    every = analyze_video(face_clip, detector, two_models,
                          AnalysisSettings(frames=8, views_on="all", views_per_face="all"),
                          ensemble=fitted)
    assert verdict_only.primary == ENSEMBLE
    for lean, full, viewed in zip(verdict_only.faces, every.faces, face_result.faces):
        assert set(lean.views[member]) == set(lean.views[ENSEMBLE]) == {"original", "flip", "jpeg"}
        assert set(lean.views[other]) == {"original"}
        assert set(full.views[other]) == {"original", "flip", "jpeg"}
        # The member and the verdict are what scoring every view gives; the model beside them is
        # scored on the crop alone, so its P is its original view's.
        assert lean.scores[member] == pytest.approx(full.scores[member], abs=1e-5)
        assert lean.scores[ENSEMBLE] == pytest.approx(full.scores[ENSEMBLE], abs=1e-5)
        assert lean.scores[other] == pytest.approx(viewed.views[other]["original"], abs=1e-5)
        assert full.scores[other] == pytest.approx(viewed.scores[other], abs=1e-5)
    assert (verdict_only.verdicts[ENSEMBLE].probability
            == pytest.approx(every.verdicts[ENSEMBLE].probability, abs=1e-5))
    assert verdict_only.verdicts[ENSEMBLE].label == every.verdicts[ENSEMBLE].label
    # What benchmarks/views_beside_verdict.py re-decides from stored reports: the analysis that
    # scored every view, with the model beside the verdict read on its crops, is the lean one.
    redecided = video_verdicts(without_views(every, [other]).faces, every.models,
                               verdict_only.settings)
    for name, verdict in verdict_only.verdicts.items():
        assert redecided[name].probability == pytest.approx(verdict.probability, abs=1e-5)
        assert redecided[name].label == verdict.label
    assert verdict_only.scored_views == {member: ["flip", "jpeg"], other: [],
                                         ENSEMBLE: ["flip", "jpeg"]}
    with pytest.raises(ValueError, match="views_on"):
        AnalysisSettings(views_on="some")


def test_seen_one_way_each_face_takes_the_views_in_turn_for_one_pass_not_three(
        face_result, two_models, face_clip, detector, monkeypatch):
    rows = []
    for classifier in two_models:
        predict = classifier.predict
        monkeypatch.setattr(classifier, "predict",
                            lambda batch, predict=predict: rows.append(len(batch)) or predict(batch))
    one = analyze_video(face_clip, detector, two_models,
                        AnalysisSettings(frames=8, views_per_face="one"))
    faces = len(one.faces)
    assert faces == 8 and rows == [faces, faces]        # every face once per model
    for k, (turn, every) in enumerate(zip(one.faces, face_result.faces)):
        own = ("original", "flip", "jpeg")[k % 3]       # the person's faces in frame order
        for classifier in two_models:
            name, card = classifier.name, classifier.card
            # The face in its one way scores as when it is seen every way, and that is its P.
            assert set(turn.views[name]) == {own}
            assert turn.views[name][own] == pytest.approx(every.views[name][own], abs=1e-5)
            assert turn.scores[name] == pytest.approx(turn.views[name][own], abs=1e-9)
            assert turn.raw[name] == pytest.approx(
                _raw(turn.views[name][own], card.threshold, card.temperature), abs=1e-5)
        assert set(turn.views[ENSEMBLE]) == {own}
    assert one.scored_views == {c.name: ["flip", "jpeg"] for c in two_models} | {
        ENSEMBLE: ["flip", "jpeg"]}
    # Each way is read from the faces seen in it: one that reads the other way turns the verdict
    # UNCERTAIN although it holds a third of the faces; the faces as found are a way too.
    import dataclasses

    sure = AnalysisSettings(frames=8, views_per_face="one", band=0.1)
    for odd_way in (None, "flip", "original"):
        faces = [dataclasses.replace(f, scores={**f.scores, ENSEMBLE: 0.95}, views={
            **f.views, ENSEMBLE: {v: (0.05 if v == odd_way else 0.95)
                                  for v in f.views[ENSEMBLE]}}) for f in one.faces]
        verdict = video_verdicts(faces, one.models, sure)[ENSEMBLE]
        assert verdict.label == ("FAKE" if odd_way is None else "UNCERTAIN")
        if odd_way == "flip":
            assert "their mirror images say REAL" in verdict.reasons[0]
        if odd_way == "original":
            assert "the faces as found say REAL" in verdict.reasons[0]
    with pytest.raises(ValueError, match="views_per_face"):
        AnalysisSettings(views_per_face="two")


def _raw(calibrated, threshold, temperature):
    """The network output behind a calibrated score (verdict.calibrate inverted)."""
    logit = lambda p: np.log(p) - np.log1p(-p)  # noqa: E731
    z = logit(calibrated) * temperature + logit(threshold)
    return 1.0 / (1.0 + np.exp(-z))


def test_a_verdict_on_mostly_small_faces_is_uncertain_and_says_why(tmp_path, detector, face_clip):
    make_tiny_model(tmp_path, "vgg16", name="sure", constant_output=0.9)
    sure = load_models("all", tmp_path)
    judged = analyze_video(face_clip, detector, sure, SETTINGS)
    assert judged.verdict.label == "FAKE" and judged.verdict.reasons == []
    # Every face of this clip is about 100 px wide: below a 500 px floor all of them are small.
    small = analyze_video(face_clip, detector, sure,
                          AnalysisSettings(frames=8, small_face_px=500))
    assert small.verdict.probability == pytest.approx(judged.verdict.probability)
    assert small.verdict.label == "UNCERTAIN"
    assert small.verdict.reasons == [small.verdict.reasons[0]]
    assert small.verdict.reasons[0].startswith("8 of the 8 faces are smaller than 500 px")
    assert json.loads(small.to_json())["verdict"]["reasons"] == small.verdict.reasons


def test_a_failed_annotation_keeps_the_verdict_and_says_what_was_not_drawn(
        face_clip, detector, two_models, tmp_path, monkeypatch, face_result):
    import core.pipeline

    def broken(*args, **kwargs):
        raise ValueError("cannot reshape array of size 40128 into shape (153,264)")

    monkeypatch.setattr(core.pipeline, "write_annotated_video", broken)
    result = analyze_video(face_clip, detector, two_models, SETTINGS,
                           annotated_path=tmp_path / "annotated.mp4")
    assert result.annotated_video is None
    assert result.verdict.probability == pytest.approx(face_result.verdict.probability)
    assert len(result.faces) == len(face_result.faces)
    assert result.warnings == ["the annotated video could not be written (cannot reshape array "
                               "of size 40128 into shape (153,264)); the verdict, timeline and "
                               "reports do not depend on it"]
    assert json.loads(result.to_json())["warnings"] == result.warnings
