"""Self-Blended Images on a real face: the astronaut photo, found by the real MTCNN and cut as
extraction cuts it, so the keypoints are the detector's own."""
import cv2
import numpy as np
import pytest
from skimage.data import astronaut

from core.training.extract import crop_face
from core.faces.detector import FaceDetector
from core.training.sbi import blend, face_mask, keypoint_array, make_source, self_blend

SEEDS = range(24)


@pytest.fixture(scope="module")
def face():
    """(crop 160 x 160 uint8, keypoints in crop pixels) at the inference margin."""
    detections = FaceDetector().detect(astronaut())
    assert len(detections) == 1
    crop, keypoints = crop_face(astronaut(), detections[0], margin=0.2, crop_size=160)
    return crop, keypoint_array(keypoints)


def inner_face(shape, points) -> np.ndarray:
    """Boolean mask of the polygon through eyes, mouth corners (and nose): the face's core."""
    region = np.zeros(shape[:2], dtype=np.uint8)
    hull = cv2.convexHull(np.round(points).astype(np.int32))
    cv2.fillConvexPoly(region, hull, 1)
    return region.astype(bool)


def border_band(shape, fraction=0.08) -> np.ndarray:
    band = np.ones(shape[:2], dtype=bool)
    k = int(round(shape[0] * fraction))
    band[k:-k, k:-k] = False
    return band


def test_keypoints_sit_where_a_face_has_them(face):
    crop, points = face
    left_eye, right_eye, nose, mouth_left, mouth_right = points
    assert np.all((points > 0) & (points < crop.shape[0]))
    assert left_eye[0] < nose[0] < right_eye[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
    # The crop is centred on the face box, so the face's middle is near the crop's middle.
    assert abs(points[:, 0].mean() - crop.shape[1] / 2) < 0.1 * crop.shape[1]


@pytest.mark.parametrize("seed", SEEDS)
def test_mask_covers_the_face_and_leaves_the_border_alone(face, seed):
    crop, points = face
    blended, mask = self_blend(crop, points, np.random.default_rng(seed), blend_ratio=1.0)
    inside = inner_face(crop.shape, points)
    assert inside.sum() > 500
    assert np.mean(mask[inside] > 0.5) >= 0.9
    untouched = mask == 0
    assert np.array_equal(blended[untouched], crop[untouched])
    band = border_band(crop.shape)
    assert np.all(mask[band] == 0)
    assert np.array_equal(blended[band], crop[band])
    # Something did change inside the face.
    assert np.abs(blended[inside].astype(int) - crop[inside].astype(int)).mean() > 0.5


@pytest.mark.parametrize("seed", SEEDS)
def test_blend_is_mask_times_source_plus_rest_of_target(face, seed):
    crop, points = face
    blended, mask = self_blend(crop, points, np.random.default_rng(seed))
    # The same random stream rebuilds the same source; the first draws are the source's.
    source = make_source(crop, np.random.default_rng(seed))
    expected = np.clip(np.rint(mask[..., None] * source.astype(np.float32)
                               + (1 - mask[..., None]) * crop.astype(np.float32)), 0, 255)
    assert np.array_equal(blended, expected.astype(np.uint8))
    assert 0.25 - 1e-6 <= mask.max() <= 1.0 + 1e-6
    assert mask.dtype == np.float32 and mask.shape == crop.shape[:2]


def test_blend_ratios_vary_between_draws(face):
    crop, points = face
    peaks = [self_blend(crop, points, np.random.default_rng(s))[1].max() for s in SEEDS]
    assert min(peaks) < 0.6 and max(peaks) > 0.8


def test_plain_mask_is_the_face_outline(face):
    crop, points = face
    mask = face_mask(crop.shape, points)
    assert set(np.unique(mask).tolist()) <= {0.0, 1.0}
    assert np.all(mask[inner_face(crop.shape, points)] == 1.0)
    # A face, not the whole crop: between a sixth and two thirds of it.
    assert 1 / 6 < mask.mean() < 2 / 3


def test_blend_keeps_zero_mask_pixels_bit_identical():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    source = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mask = np.zeros((32, 32), np.float32)
    mask[8:24, 8:24] = 1.0
    out = blend(target, source, mask)
    assert np.array_equal(out[mask == 0], target[mask == 0])
    assert np.array_equal(out[mask == 1], source[mask == 1])


def test_bad_keypoints_are_refused(face):
    crop, _ = face
    with pytest.raises(ValueError, match="keypoints lack"):
        self_blend(crop, {"left_eye": (1, 2)})
    with pytest.raises(ValueError, match="5 finite"):
        self_blend(crop, np.full((5, 2), np.nan))
    with pytest.raises(ValueError, match="uint8"):
        self_blend(crop.astype(np.float32), np.zeros((5, 2)))
