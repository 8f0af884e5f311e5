import threading

import cv2
import numpy as np
import pytest
from skimage.data import astronaut

from core.faces.detector import (Detection, FaceDetector, KEYPOINT_NAMES, nms, pyramid_scales,
                                 square_crop)
from core.faces.tracking import iou

# The astronaut's face (eyebrows to chin, ear to ear), checked by eye on skimage.data.astronaut().
FACE_BOX = (180.0, 62.0, 266.0, 172.0)
# The head and shoulders around it, the part we paste into synthetic frames.
HEAD = (80, 0, 380, 300)   # x1, y1, x2, y2


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


def background(height, width, seed=0):
    """A smooth colour gradient with mild noise: not blank, but no face in it."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([60 + 80 * xs / width, 90 + 60 * ys / height, 120 + 0 * xs], axis=-1)
    return np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)


def paste_head(frame, left, top, zoom=1.0, mirror=False):
    """Paste the astronaut's head at (left, top), scaled by zoom; returns the face's box there."""
    head = astronaut()[HEAD[1]:HEAD[3], HEAD[0]:HEAD[2]]
    if mirror:
        head = head[:, ::-1]
    if zoom != 1.0:
        head = cv2.resize(head, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_CUBIC)
    frame[top:top + head.shape[0], left:left + head.shape[1]] = head
    x1, y1, x2, y2 = (FACE_BOX[0] - HEAD[0], FACE_BOX[1] - HEAD[1],
                      FACE_BOX[2] - HEAD[0], FACE_BOX[3] - HEAD[1])
    if mirror:
        x1, x2 = (HEAD[2] - HEAD[0]) - x2, (HEAD[2] - HEAD[0]) - x1
    return (left + x1 * zoom, top + y1 * zoom, left + x2 * zoom, top + y2 * zoom)


@pytest.mark.parametrize("height, width, left, top, zoom", [
    (720, 1280, 700, 250, 1.0),      # landscape, detected at half size
    (1080, 1920, 1100, 300, 2.0),    # full HD, detected at a third, face much larger
    (1280, 720, 150, 800, 1.3),      # portrait phone video
])
def test_pasted_face_found_at_full_resolution(detector, height, width, left, top, zoom):
    frame = background(height, width)
    expected = paste_head(frame, left, top, zoom)

    faces = detector.detect(frame)

    assert len(faces) == 1
    face = faces[0]
    assert iou(face.box, expected) > 0.5, (face.box, expected)
    assert face.confidence >= 0.95
    assert set(face.keypoints) == set(KEYPOINT_NAMES)
    x1, y1, x2, y2 = face.box
    for x, y in face.keypoints.values():
        assert x1 <= x <= x2 and y1 <= y <= y2
    # Image-left eye is left of the other, both eyes above the nose, nose above the mouth.
    assert face.keypoints["left_eye"][0] < face.keypoints["right_eye"][0]
    assert face.keypoints["left_eye"][1] < face.keypoints["nose"][1] < face.keypoints["mouth_left"][1]


def test_litert_and_tensorflow_find_the_same_faces(detector):
    assert detector.runtime == "litert"
    on_tensorflow = FaceDetector(runtime="tensorflow")
    assert on_tensorflow.runtime == "tensorflow"
    frames = []
    for height, width, left, top, zoom in ((720, 1280, 700, 250, 1.0), (480, 640, 60, 40, 1.4)):
        frame = background(height, width)
        paste_head(frame, left, top, zoom)
        frames.append(frame)
    frames.append(frames[0][:, ::-1].copy())
    for frame in frames:
        got, expected = detector.detect(frame), on_tensorflow.detect(frame)
        assert len(got) == len(expected) >= 1
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a.box, b.box, atol=0.01)
            assert abs(a.confidence - b.confidence) < 1e-4
            for name in KEYPOINT_NAMES:
                np.testing.assert_allclose(a.keypoints[name], b.keypoints[name], atol=0.01)


def test_litert_scores_any_number_of_patches_as_tensorflow_does(detector):
    """RNet and ONet batches are padded to buckets and cut into runs of 256 on LiteRT."""
    from core.faces.detector import _on_tensorflow

    rng = np.random.default_rng(3)
    for network, traced, side in ((detector._rnet, detector._traced[1], 24),
                                  (detector._onet, detector._traced[2], 48)):
        for n in (1, 5, 300):
            patches = rng.uniform(-1, 1, (n, side, side, 3)).astype(np.float32)
            got, expected = network(patches), _on_tensorflow(traced)(patches)
            assert [g.shape for g in got] == [e.shape for e in expected]
            for g, e in zip(got, expected):
                np.testing.assert_allclose(g, e, atol=1e-5)


def test_an_unknown_detector_runtime_is_refused():
    with pytest.raises(ValueError, match="runtime must be one of litert, tensorflow"):
        FaceDetector(runtime="gpu")


def test_two_faces_give_two_detections(detector):
    frame = background(720, 1280, seed=1)
    left_face = paste_head(frame, 100, 200)
    right_face = paste_head(frame, 800, 300, mirror=True)

    faces = sorted(detector.detect(frame), key=lambda f: f.box[0])

    assert len(faces) == 2
    assert iou(faces[0].box, left_face) > 0.5
    assert iou(faces[1].box, right_face) > 0.5


def test_no_face_in_blank_or_noise(detector):
    rng = np.random.default_rng(3)
    blank = np.full((720, 1280, 3), 128, dtype=np.uint8)
    noise = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    assert detector.detect(blank) == []
    assert detector.detect(noise) == []
    assert detector.detect(background(360, 640)) == []


def test_small_image_is_not_upscaled_and_tiny_image_has_no_faces(detector):
    image = astronaut()[:300, 80:380].copy()   # 300 x 300: below detect_long_side
    faces = detector.detect(image)
    assert len(faces) == 1
    shifted = tuple(v - d for v, d in zip(FACE_BOX, (80, 0, 80, 0)))
    assert iou(faces[0].box, shifted) > 0.6
    assert detector.detect(np.zeros((10, 10, 3), dtype=np.uint8)) == []


def test_pyramid_starts_at_min_face_size_and_stops_at_12_px():
    for min_face in (20, 40, 60, 100):
        scales = pyramid_scales(360, 640, min_face)
        assert scales[0] == pytest.approx(12 / min_face)
        assert 360 * scales[-1] >= 12
        assert 360 * scales[-1] * 0.709 < 12
    assert pyramid_scales(30, 30, 40) == []    # nothing of 40 px fits in 30 px


def test_min_face_size_above_20_works_and_filters_small_faces():
    """The mtcnn package crashes for min_face_size > 20 (tiny pyramid levels); ours does not,
    and a larger minimum really skips the smaller face."""
    frame = background(720, 1280, seed=2)
    big = paste_head(frame, 100, 50, zoom=2.0)    # ~86 px face at the 640 px detection size
    paste_head(frame, 900, 300, zoom=0.5)         # ~21 px face at detection size
    large_only = FaceDetector(min_face_size=60).detect(frame)
    assert len(large_only) == 1
    assert iou(large_only[0].box, big) > 0.5
    assert len(FaceDetector(min_face_size=20).detect(frame)) == 2


def test_networks_are_traced_once_for_any_frame_size(detector):
    for height, width in ((360, 640), (480, 640), (720, 1280), (1280, 720), (250, 333)):
        frame = background(height, width)
        paste_head(frame, 0, 0, zoom=min(height, width) / 400)
        detector.detect(frame)
    assert detector.tracing_counts() == {"pnet": 1, "rnet": 1, "onet": 1}


def test_detect_from_two_threads_gives_the_same_faces(detector):
    frame = background(720, 1280, seed=4)
    paste_head(frame, 400, 200)
    expected = [f.box for f in detector.detect(frame)]
    assert len(expected) == 1
    results, errors = [], []

    def work():
        try:
            for _ in range(3):
                results.append([f.box for f in detector.detect(frame)])
        except Exception as exc:   # surfaced below; a thread's exception would vanish otherwise
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 6
    for boxes in results:
        assert len(boxes) == 1
        assert boxes[0] == pytest.approx(expected[0])


@pytest.mark.parametrize("bad", [np.zeros((100, 100), np.uint8), np.zeros((100, 100, 4), np.uint8),
                                 np.zeros((100, 100, 3), np.float32)])
def test_detect_rejects_non_rgb_uint8(detector, bad):
    with pytest.raises(ValueError):
        detector.detect(bad)


def test_nms_keeps_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [2, 2, 6, 6]], float)
    scores = np.array([0.8, 0.9, 0.7, 0.95])
    assert list(nms(boxes, scores, 0.5)) == [3, 1, 2]              # IoU(3, 1) = 16 / 100
    assert list(nms(boxes, scores, 0.5, method="min")) == [3, 2]   # 3 lies inside 1 and 0


@pytest.mark.parametrize("size", [224, 299, 600, 128])
def test_square_crop_has_requested_size(size):
    crop = square_crop(astronaut(), FACE_BOX, size=size)
    assert crop.shape == (size, size, 3)
    assert crop.dtype == np.uint8


def test_square_crop_side_and_content():
    image = np.zeros((200, 300, 3), dtype=np.uint8)
    image[50:150, 100:180] = 255      # an 80 x 100 "face"
    # margin 0.25 on a 100 px long side: a 150 px square centred on (140, 100).
    crop = square_crop(image, (100, 50, 180, 150), margin=0.25, size=150)
    white = np.argwhere(crop[:, :, 0] > 127)
    assert white[:, 0].min() == 25 and white[:, 0].max() == 124
    assert white[:, 1].min() == 35 and white[:, 1].max() == 114


def test_square_crop_near_border_keeps_face_centred():
    image = np.full((200, 200, 3), 90, dtype=np.uint8)
    image[80:120, 0:40] = 255          # a face touching the left edge
    crop = square_crop(image, (0, 80, 40, 120), margin=0.2, size=112)
    white = np.argwhere(crop[:, :, 0] > 200)
    centre_y, centre_x = white.mean(axis=0)
    assert centre_x == pytest.approx(55.5, abs=1.5)
    assert centre_y == pytest.approx(55.5, abs=1.5)
    # The 8 px of the square left of the frame are black, not stretched image.
    assert crop[:, :10].max() == 0
    assert crop[:, 20:30].min() > 0


def test_square_crop_rejects_empty_box():
    with pytest.raises(ValueError):
        square_crop(astronaut(), (50, 50, 50, 80))


def test_detection_geometry_helpers():
    d = Detection((10.0, 20.0, 50.0, 80.0), 0.99, {})
    assert (d.width, d.height, d.center) == (40.0, 60.0, (30.0, 50.0))


def test_mosaic_gives_each_level_the_same_pnet_output_as_alone(detector):
    """PNet runs once on all pyramid levels packed together; the packing must not change what
    it sees in any level (cells whose window lies inside the level)."""
    from core.faces.detector import _mosaic, _normalised, _pnet_grid

    rng = np.random.default_rng(5)
    levels = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
              for h, w in ((108, 192), (77, 137), (55, 97), (39, 69), (28, 49), (20, 35), (14, 25))]
    canvas, positions = _mosaic(levels)
    together = detector._pnet(_normalised(canvas)[None])[1][0, :, :, 1]
    spans = []
    for level, (left, top) in zip(levels, positions):
        assert left % 2 == 0 and top % 2 == 0
        spans.append((left, top, left + level.shape[1], top + level.shape[0]))
        alone = detector._pnet(_normalised(level)[None])[1][0, :, :, 1]
        rows, cols = _pnet_grid(*level.shape[:2])
        assert alone.shape == (rows, cols)
        # The last cell of an odd side reads one pixel past the level (padding vs. gap).
        rows -= level.shape[0] % 2
        cols -= level.shape[1] % 2
        window = together[top // 2:top // 2 + rows, left // 2:left // 2 + cols]
        np.testing.assert_allclose(window, alone[:rows, :cols], atol=1e-4)
    for i, a in enumerate(spans):          # levels never overlap
        for b in spans[i + 1:]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
