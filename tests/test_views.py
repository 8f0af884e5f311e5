"""Other views of each face crop (core.verdicts.views) and the small-faces reason (core.pipeline)."""
from __future__ import annotations

import numpy as np
import pytest

from core.pipeline import small_faces_reason
from core.results import FaceResult
from core.settings import AnalysisSettings
from core.verdicts.views import (VIEW_QUALITY, all_views, jpeg_recompress, parse_views,
                                 predict_views, view_batch, view_turns)


def _crops(n: int = 3, size: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_parse_views():
    assert parse_views("flip,jpeg") == ("flip", "jpeg")
    assert parse_views(" jpeg , flip ") == ("jpeg", "flip")
    assert parse_views("flip") == ("flip",)
    assert parse_views("none") == ()
    assert parse_views("") == ()
    assert parse_views("none,flip") == ("flip",)


@pytest.mark.parametrize("text", ["blur", "flip,blur", "Flip"])
def test_parse_views_rejects_unknown(text):
    with pytest.raises(ValueError, match="unknown view"):
        parse_views(text)


def test_settings_check_views():
    assert AnalysisSettings(views="none").views == "none"
    with pytest.raises(ValueError, match="unknown view blur"):
        AnalysisSettings(views="flip,blur")


def test_flip_mirrors_left_to_right():
    crops = _crops()
    flipped = view_batch(crops, "flip")
    assert flipped.shape == crops.shape and flipped.dtype == np.uint8
    assert flipped.flags["C_CONTIGUOUS"]
    for i in range(crops.shape[0]):
        for x in range(crops.shape[2]):
            np.testing.assert_array_equal(flipped[i, :, x], crops[i, :, -1 - x])
    np.testing.assert_array_equal(view_batch(flipped, "flip"), crops)
    # Rows stay where they are.
    np.testing.assert_array_equal(flipped[:, 0].sum(axis=(1, 2)), crops[:, 0].sum(axis=(1, 2)))


def test_jpeg_view_keeps_shape_and_colour():
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 220
    out = jpeg_recompress(red, VIEW_QUALITY)
    assert out.shape == red.shape and out.dtype == np.uint8
    # RGB stays RGB (no BGR swap on the way back).
    assert out[..., 0].mean() > 200 and out[..., 1].mean() < 30 and out[..., 2].mean() < 30
    crops = _crops(2, 32)
    batch = view_batch(crops, "jpeg")
    assert batch.shape == crops.shape
    for crop, view in zip(crops, batch):
        np.testing.assert_array_equal(view, jpeg_recompress(crop, VIEW_QUALITY))
    assert not np.array_equal(batch, crops)
    # Lower quality, larger error.
    error = {q: np.abs(jpeg_recompress(crops[0], q).astype(int) - crops[0]).mean() for q in (30, 95)}
    assert error[30] > error[95]


def test_view_batch_rejects_unknown():
    with pytest.raises(ValueError):
        view_batch(_crops(), "rotate")


def test_all_views_stacks_crops_then_each_view_in_order():
    crops = _crops(3)
    assert all_views(crops, ()) is crops
    stacked = all_views(crops, ("flip", "jpeg"))
    assert stacked.shape == (9, 16, 16, 3)
    np.testing.assert_array_equal(stacked[:3], crops)
    np.testing.assert_array_equal(stacked[3:6], crops[:, :, ::-1])
    np.testing.assert_array_equal(stacked[6:], view_batch(crops, "jpeg"))
    other = all_views(crops, ("jpeg", "flip"))
    np.testing.assert_array_equal(other[3:6], view_batch(crops, "jpeg"))
    np.testing.assert_array_equal(other[6:], crops[:, :, ::-1])
    # The pipeline's reshape: row k of (views, N) is view k of every face.
    assert all_views(crops, ("flip",)).reshape(2, 3, -1).shape == (2, 3, 16 * 16 * 3)


def _face(width: float, height: float, x: float = 10.0, y: float = 20.0) -> FaceResult:
    return FaceResult(frame_index=0, time=0.0, person_id=0, box=(x, y, x + width, y + height),
                      confidence=0.99, raw={}, scores={})


def test_small_faces_reason_names_the_counts():
    faces = [_face(40, 50), _face(30, 44), _face(52, 70), _face(100, 120), _face(90, 110)]
    reason = small_faces_reason(faces, 60)
    # min side: 40, 30, 52, 100, 90 -> 3 small of 5, median 52.
    assert reason == ("3 of the 5 faces are smaller than 60 px (median 52 px): "
                      "too little detail to judge")


def test_small_faces_reason_uses_the_shorter_side():
    # Tall and narrow faces are small, however tall.
    reason = small_faces_reason([_face(50, 200), _face(50, 200), _face(80, 80)], 60)
    assert reason is not None and reason.startswith("2 of the 3 faces")


@pytest.mark.parametrize("widths", [
    [40, 40, 100, 100],          # exactly half: not most
    [40, 100, 100],
    [60, 60, 60],                # 60 px is not smaller than 60
    [200],
])
def test_small_faces_reason_none_when_most_are_large(widths):
    assert small_faces_reason([_face(w, w) for w in widths], 60) is None


def test_small_faces_reason_off_or_no_faces():
    small = [_face(20, 20)] * 4
    assert small_faces_reason(small, 0) is None
    assert small_faces_reason(small, -5) is None
    assert small_faces_reason([], 60) is None
    assert small_faces_reason(small, 21) == ("4 of the 4 faces are smaller than 21 px "
                                             "(median 20 px): too little detail to judge")


class _MeanPixel:
    """Scores a crop by its pixels weighted by column (so a mirror scores otherwise): which crop
    in which view reached which cell is then readable."""

    def predict(self, batch):
        batch = np.asarray(batch, dtype=np.float64)
        return (batch * np.arange(batch.shape[2])[None, None, :, None]).mean(axis=(1, 2, 3))


def test_predict_views_with_turns_scores_each_face_in_its_own_view_only():
    crops = _crops(7)
    views = ("flip", "jpeg")
    turns = view_turns([0, 1, 2, 3, 4, 0, 1], views)
    # Along a person's faces: as found, mirrored, re-encoded, as found, ...
    np.testing.assert_array_equal(turns, [0, 1, 2, 0, 1, 0, 1])
    every = predict_views(_MeanPixel(), crops, views)
    one = predict_views(_MeanPixel(), crops, views, turns)
    assert one.shape == every.shape == (3, 7)
    assert not np.allclose(every[0], every[1])          # the mirror is told apart
    for face, turn in enumerate(turns):
        np.testing.assert_allclose(one[turn, face], every[turn, face])
        assert np.isnan(np.delete(one[:, face], turn)).all()
    # One view a face: the batch holds each face once.
    sizes = []
    counting = _MeanPixel()
    counting.predict = lambda batch, f=counting.predict: sizes.append(len(batch)) or f(batch)
    predict_views(counting, crops, views, turns)
    assert sizes == [7]
    assert view_turns([0, 1], ()) is None
