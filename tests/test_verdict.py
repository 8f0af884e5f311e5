import numpy as np
import pytest

from core.verdicts.verdict import (RULES, aggregate_person, aggregate_video, calibrate,
                                   confident_mean, ensemble, label_for)


def test_calibrate_maps_threshold_to_half():
    for threshold in (0.1, 0.3, 0.5, 0.82):
        assert calibrate(threshold, threshold=threshold) == pytest.approx(0.5)
        assert calibrate(threshold, threshold=threshold, temperature=3.0) == pytest.approx(0.5)


def test_calibrate_known_values():
    assert calibrate(0.8) == pytest.approx(0.8)                     # identity at 0.5, T = 1
    # logit(0.8) = ln 4; halved is ln 2; sigmoid(ln 2) = 2 / 3.
    assert calibrate(0.8, temperature=2.0) == pytest.approx(2 / 3)
    # Threshold 0.2: logit(0.5) - logit(0.2) = ln 4, sigmoid(ln 4) = 0.8.
    assert calibrate(0.5, threshold=0.2) == pytest.approx(0.8)


def test_calibrate_is_monotone_clipped_and_keeps_shape():
    p = np.linspace(0.0, 1.0, 101)
    out = calibrate(p, threshold=0.3, temperature=1.7)
    assert out.shape == p.shape
    assert np.all(np.diff(out) > 0)
    assert np.all(np.isfinite(out))
    assert out[0] > 0 and out[-1] < 1
    assert calibrate(np.array([[0.2, 0.7]])).shape == (1, 2)
    assert isinstance(calibrate(0.4), float)


@pytest.mark.parametrize("threshold, temperature", [(0.0, 1.0), (1.0, 1.0), (0.5, 0.0), (0.5, -1.0)])
def test_calibrate_rejects_bad_parameters(threshold, temperature):
    with pytest.raises(ValueError):
        calibrate(0.5, threshold=threshold, temperature=temperature)


def test_mean_rule():
    assert aggregate_person([0.1, 0.3, 0.8], "mean") == pytest.approx(0.4)
    assert aggregate_person({3: 0.1, 9: 0.3, 12: 0.8}, "mean") == pytest.approx(0.4)


def test_confident_rule_takes_confident_fakes_when_enough():
    # 10 frames, 5 above 0.8: more than floor(10 * 0.4) = 4 and more than round(10 * 11/32) = 3.
    scores = [0.9] * 5 + [0.5] * 5
    assert aggregate_person(scores, "confident") == pytest.approx(0.9)


def test_confident_rule_plain_mean_when_too_few_fakes():
    # 4 of 10 above 0.8 is not more than 4: plain mean (3.6 + 3.0) / 10.
    scores = [0.9] * 4 + [0.5] * 6
    assert aggregate_person(scores, "confident") == pytest.approx(0.66)


def test_confident_rule_takes_confident_reals_when_nearly_all():
    # 19 of 20 below 0.2 is more than 18: mean of those.
    assert aggregate_person([0.1] * 19 + [0.7], "confident") == pytest.approx(0.1)
    # 9 of 10 is not more than 9: plain mean (0.9 + 0.5) / 10.
    assert aggregate_person([0.1] * 9 + [0.5], "confident") == pytest.approx(0.14)


def test_confident_rule_one_frame_of_two_does_not_decide():
    # One confident fake of two: needs more than max(1, round(2 * 11/32)) = 1, so plain mean.
    assert aggregate_person([0.95, 0.1], "confident") == pytest.approx(0.525)
    assert aggregate_person([0.95, 0.85], "confident") == pytest.approx(0.9)


def test_confident_rule_thirty_two_frames_matches_winner_counts():
    # The winner needed more than 32 // 2.5 = 12 and more than 11: 12 fakes is not enough.
    assert confident_mean([0.9] * 12 + [0.5] * 20) == pytest.approx((10.8 + 10) / 32)
    assert confident_mean([0.9] * 13 + [0.5] * 19) == pytest.approx(0.9)


def test_confident_rule_options_change_the_answer():
    scores = [0.7] * 6 + [0.5] * 4
    assert confident_mean(scores) == pytest.approx(0.62)
    assert confident_mean(scores, fake_threshold=0.6) == pytest.approx(0.7)


def test_fakest_face_rule_at_person_level_is_the_mean():
    assert aggregate_person([0.2, 0.9, 0.4], "fakest_face") == pytest.approx(0.5)


PERSONS = {0: {0: 0.2, 1: 0.9, 2: 0.4}, 1: {1: 0.3, 2: 0.8, 3: 0.6}}


def test_video_fakest_face_takes_frame_maxima_then_mean():
    # Frame maxima: 0.2, 0.9, 0.8, 0.6 -> mean 0.625.
    assert aggregate_video(PERSONS, "fakest_face") == pytest.approx(0.625)


def test_video_mean_and_confident_take_most_suspicious_person():
    # Person means 0.5 and 1.7 / 3; with 3 frames no rule branch fires, so confident = mean.
    assert aggregate_video(PERSONS, "mean") == pytest.approx(1.7 / 3)
    assert aggregate_video(PERSONS, "confident") == pytest.approx(1.7 / 3)
    persons = {0: {i: 0.1 for i in range(10)}, 1: {i: (0.9 if i < 5 else 0.5) for i in range(10)}}
    assert aggregate_video(persons, "confident") == pytest.approx(0.9)
    assert aggregate_video(persons, "mean") == pytest.approx(0.7)


def test_empty_input_and_unknown_rule_raise():
    with pytest.raises(ValueError):
        aggregate_video({}, "mean")
    with pytest.raises(ValueError):
        aggregate_video({0: {}}, "confident")
    with pytest.raises(ValueError):
        aggregate_person([], "mean")
    with pytest.raises(ValueError):
        aggregate_person([0.5], "median")
    assert set(RULES) == {"mean", "confident", "fakest_face"}


def test_label_bands():
    assert label_for(0.6) == "FAKE"
    assert label_for(0.5999) == "UNCERTAIN"
    assert label_for(0.5) == "UNCERTAIN"
    assert label_for(0.4) == "UNCERTAIN"
    assert label_for(0.3999) == "REAL"
    assert label_for(0.5, band=0.0) == "FAKE"
    assert label_for(0.4999, band=0.0) == "REAL"
    assert label_for(0.75, band=0.25) == "FAKE"
    assert label_for(0.74, band=0.25) == "UNCERTAIN"
    with pytest.raises(ValueError):
        label_for(0.5, band=0.5)


def test_ensemble_is_mean_over_models():
    out = ensemble({"a": np.array([0.2, 0.8]), "b": np.array([0.4, 0.6]), "c": np.array([0.3, 0.1])})
    assert out == pytest.approx([0.3, 0.5])
    assert ensemble({"only": np.array([0.7])}) == pytest.approx([0.7])
    with pytest.raises(ValueError):
        ensemble({"a": np.array([0.1, 0.2]), "b": np.array([0.1])})
    with pytest.raises(ValueError):
        ensemble({})
