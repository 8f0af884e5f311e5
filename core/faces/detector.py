"""Face detection with MTCNN and square face crops.

The detector runs the `mtcnn` package's three networks (PNet, RNet, ONet) with the package's
weights, but drives them itself:

- the frame is first shrunk to `detect_long_side` (never enlarged), because MTCNN's cost grows with
  the pixel count and faces in deepfake videos are large; boxes are mapped back to full resolution;
- the image pyramid starts at 12 / min_face_size and stops once the short side would drop below
  12 px (the package's own pyramid ignores min_face_size when counting levels, and crashes on the
  tiny levels it then produces);
- each network is a `tf.function` with a fixed input signature, so it is traced once per detector
  and never again (eager Keras calls cost more than the small networks themselves), and by default
  that function runs on LiteRT (core.litert_runtime: RNet and ONet 3-5x faster a frame than
  TensorFlow's per-call overhead allows, the same outputs), TensorFlow kept where LiteRT is missing;
- RNet / ONet inputs are cut with OpenCV (area resampling, black outside the frame) as the original
  MTCNN did.
"""
from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field

import cv2
import numpy as np

KEYPOINT_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

# Stage thresholds and NMS overlaps: the mtcnn package's defaults (which follow the paper).
PNET_THRESHOLD = 0.6
RNET_THRESHOLD = 0.7
ONET_THRESHOLD = 0.8
PNET_NMS_PER_SCALE = 0.5
PNET_NMS_ALL_SCALES = 0.7
RNET_NMS = 0.7
ONET_NMS = 0.7
PYRAMID_FACTOR = 0.709
PNET_CELL = 12
PNET_STRIDE = 2
# RNet / ONet batches on LiteRT: padded to a bucket, longer ones cut into runs of the largest.
PATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
RUNTIMES = ("litert", "tensorflow")


@dataclass
class Detection:
    box: tuple[float, float, float, float]          # x1, y1, x2, y2 in full-resolution pixels
    confidence: float
    keypoints: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def center(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2.0, (self.box[1] + self.box[3]) / 2.0)


def pyramid_scales(height: int, width: int, min_face_size: float,
                   factor: float = PYRAMID_FACTOR) -> list[float]:
    """Scales at which PNet's 12 px window sees faces of min_face_size px and larger."""
    scales = []
    scale = PNET_CELL / float(min_face_size)
    short_side = min(height, width)
    while short_side * scale >= PNET_CELL:
        scales.append(scale)
        scale *= factor
    return scales


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, method: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression; returns the kept indices, best first.

    method "union" divides the overlap by the union (IoU); "min" by the smaller box, which ONet
    uses to drop a small box lying inside a bigger one.
    """
    if len(boxes) == 0:
        return np.empty(0, dtype=int)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        if not rest.size:
            break
        inter = (np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]))
                 * np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest])))
        if method == "min":
            denom = np.minimum(areas[best], areas[rest])
        else:
            denom = areas[best] + areas[rest] - inter
        overlap = inter / np.maximum(denom, 1e-9)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=int)


def _squared(boxes: np.ndarray) -> np.ndarray:
    """Boxes grown to squares around the same centre (RNet/ONet take square inputs)."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + (w - side) / 2.0
    out[:, 1] = boxes[:, 1] + (h - side) / 2.0
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _regressed(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Apply MTCNN's box regression (offsets are fractions of the box size)."""
    w = (boxes[:, 2] - boxes[:, 0])[:, None]
    h = (boxes[:, 3] - boxes[:, 1])[:, None]
    return boxes + offsets * np.concatenate([w, h, w, h], axis=1)


def _patches(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Normalised size x size crops of `boxes` (black outside the image), N x size x size x 3."""
    height, width = image.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), dtype=np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(np.round(boxes[:, :4]).astype(int)):
        bw, bh = x2 - x1, y2 - y1
        if bw < 1 or bh < 1:
            continue
        canvas = np.zeros((bh, bw, 3), dtype=np.uint8)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
        if sx2 <= sx1 or sy2 <= sy1:
            continue
        canvas[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1] = image[sy1:sy2, sx1:sx2]
        interpolation = cv2.INTER_AREA if bw > size else cv2.INTER_LINEAR
        out[i] = cv2.resize(canvas, (size, size), interpolation=interpolation)
    return _normalised(out)


def _pnet_grid(height: int, width: int) -> tuple[int, int]:
    """PNet's output rows and columns for an image of this size (3x3 conv, 2x2 pool, 2 more convs)."""
    return math.ceil((height - 2) / 2) - 4, math.ceil((width - 2) / 2) - 4


def _mosaic(levels: list[np.ndarray]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Pack pyramid levels (largest first) onto one black canvas, first-fit on shelves.

    Every level starts at even coordinates so PNet's stride-2 cell grid lines up with it, and a
    gap of at least one stride separates neighbours, so each level's own cells never reach into
    another level.
    """
    def padded(n: int) -> int:
        return n + n % 2 + PNET_STRIDE

    canvas_width = padded(levels[0].shape[1])
    shelves: list[list[int]] = []          # [top, height, used width]
    positions = []
    for level in levels:
        height, width = (padded(n) for n in level.shape[:2])
        for shelf in shelves:
            if shelf[1] >= height and shelf[2] + width <= canvas_width:
                positions.append((shelf[2], shelf[0]))
                shelf[2] += width
                break
        else:
            top = shelves[-1][0] + shelves[-1][1] if shelves else 0
            shelves.append([top, height, width])
            positions.append((0, top))
    canvas = np.zeros((shelves[-1][0] + shelves[-1][1], canvas_width, 3), dtype=np.uint8)
    for level, (left, top) in zip(levels, positions):
        canvas[top:top + level.shape[0], left:left + level.shape[1]] = level
    return canvas, positions


def _normalised(pixels: np.ndarray) -> np.ndarray:
    return (pixels.astype(np.float32) - 127.5) * (1.0 / 128.0)


class FaceDetector:
    """MTCNN on a downscaled copy of each frame. One instance is shared between threads.

    min_confidence: ONet face probability a detection needs (0.95, the origin project's value).
    detect_long_side: the frame is shrunk (never enlarged) to this long side before detection;
        None detects at full resolution.
    min_face_size: smallest face looked for, in detection-image pixels (a 1080p frame shrunk to
        640 px makes 40 px there about 120 px in the frame).
    """

    def __init__(self, min_confidence: float = 0.95, detect_long_side: int | None = 640,
                 min_face_size: float = 40, runtime: str = "litert"):
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
        if detect_long_side is not None and detect_long_side < PNET_CELL:
            raise ValueError(f"detect_long_side must be at least {PNET_CELL} px, got {detect_long_side}")
        if min_face_size < PNET_CELL:
            # Smaller faces would need an enlarged pyramid level: slow and unreliable.
            raise ValueError(f"min_face_size must be at least {PNET_CELL} px, got {min_face_size}")
        self.min_confidence = float(min_confidence)
        self.detect_long_side = detect_long_side
        self.min_face_size = float(min_face_size)
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        self._lock = threading.Lock()
        self._traced = self._compiled_networks()
        self._pnet, self._rnet, self._onet = (_on_tensorflow(fn) for fn in self._traced)
        self.runtime = "tensorflow"
        if runtime == "litert":
            self._use_litert()

    def _use_litert(self) -> None:
        from core import litert_runtime

        rng = np.random.default_rng(0)
        pnet, rnet, onet = self._traced
        try:
            pools = [litert_runtime.checked_pool(fn, rng.uniform(-1, 1, shape).astype(np.float32))
                     for fn, shape in ((pnet, (1, 30, 40, 3)), (rnet, (3, 24, 24, 3)),
                                       (onet, (3, 48, 48, 3)))]
        except litert_runtime.LiteRTUnavailable as exc:
            logging.getLogger(__name__).warning("MTCNN runs on TensorFlow: %s", exc)
            return
        self._pnet = pools[0].run
        self._rnet, self._onet = (
            lambda x, pool=pool: _in_buckets(pool, x, litert_runtime.bucketed) for pool in pools[1:])
        self.runtime = "litert"

    @staticmethod
    def _compiled_networks():
        import tensorflow as tf
        from mtcnn.network.onet import ONet
        from mtcnn.network.pnet import PNet
        from mtcnn.network.rnet import RNet
        from mtcnn.utils.tensorflow import load_weights

        compiled = []
        for network_class, weights, input_side in ((PNet, "pnet.lz4", None),
                                                   (RNet, "rnet.lz4", 24),
                                                   (ONet, "onet.lz4", 48)):
            network = network_class()
            network.build()
            network.set_weights(load_weights(weights))
            signature = [tf.TensorSpec([None, input_side, input_side, 3], tf.float32)]
            compiled.append(tf.function(network, input_signature=signature))
        return tuple(compiled)

    def tracing_counts(self) -> dict[str, int]:
        """How often each network was traced; stays at 1 per network after the first call."""
        return {name: fn.experimental_get_tracing_count()
                for name, fn in zip(("pnet", "rnet", "onet"), self._traced)}

    def detect(self, image: np.ndarray, *, long_side_at_least: int = 0) -> list[Detection]:
        """Faces in an H x W x 3 uint8 RGB image, best first, boxes clipped to the image.
        long_side_at_least: shrink the image to no less than this long side, whatever
        detect_long_side says (a photo is searched once and can afford the pixels that each of
        a clip's frames cannot)."""
        image = _checked_image(image)
        height, width = image.shape[:2]
        scale = 1.0
        long_side = (None if self.detect_long_side is None
                     else max(self.detect_long_side, long_side_at_least))
        if long_side is not None and max(height, width) > long_side:
            scale = long_side / max(height, width)
        if scale < 1.0:
            small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = cv2.resize(image, small_size, interpolation=cv2.INTER_AREA)
        else:
            small = image
        with self._lock:
            boxes, scores, landmarks = self._run(small)

        sx = width / small.shape[1]
        sy = height / small.shape[0]
        detections = []
        for box, score, marks in zip(boxes, scores, landmarks):
            if score < self.min_confidence:
                continue
            x1 = float(np.clip(box[0] * sx, 0, width))
            y1 = float(np.clip(box[1] * sy, 0, height))
            x2 = float(np.clip(box[2] * sx, 0, width))
            y2 = float(np.clip(box[3] * sy, 0, height))
            if x2 - x1 < 1 or y2 - y1 < 1:
                continue
            keypoints = {name: (float(marks[k] * sx), float(marks[k + 5] * sy))
                         for k, name in enumerate(KEYPOINT_NAMES)}
            detections.append(Detection((x1, y1, x2, y2), float(score), keypoints))
        return detections

    def _run(self, image: np.ndarray):
        """The three MTCNN stages on the detection-size image; returns boxes, scores, landmarks."""
        empty = (np.empty((0, 4)), np.empty(0), np.empty((0, 10)))
        height, width = image.shape[:2]

        levels, scales = [], []
        source = image
        for scale in pyramid_scales(height, width, self.min_face_size):
            # Each level is shrunk from the previous one: area resampling straight from the
            # detection image costs several times more for the same picture at these ratios.
            level_size = (math.ceil(width * scale), math.ceil(height * scale))
            source = cv2.resize(source, level_size, interpolation=cv2.INTER_AREA)
            levels.append(source)
            scales.append((level_size[0] / width, level_size[1] / height))
        if not levels:
            return empty

        # One PNet call on all levels packed together: the small levels alone cost little compute
        # but a full call each.
        canvas, positions = _mosaic(levels)
        offsets, probs = self._pnet(_normalised(canvas)[None])
        offsets, face_prob = offsets[0], probs[0, :, :, 1]
        proposals = []
        for level, (left, top), (scale_x, scale_y) in zip(levels, positions, scales):
            rows, cols = _pnet_grid(*level.shape[:2])
            if rows <= 0 or cols <= 0:
                continue
            cell_y, cell_x = top // PNET_STRIDE, left // PNET_STRIDE
            window = (slice(cell_y, cell_y + rows), slice(cell_x, cell_x + cols))
            found = self._pnet_boxes(offsets[window], face_prob[window], scale_x, scale_y)
            if len(found):
                found = found[nms(found[:, :4], found[:, 4], PNET_NMS_PER_SCALE)]
                proposals.append(found)
        if not proposals:
            return empty
        candidates = np.concatenate(proposals)
        candidates = candidates[nms(candidates[:, :4], candidates[:, 4], PNET_NMS_ALL_SCALES)]
        boxes = _squared(_regressed(candidates[:, :4], candidates[:, 5:9]))

        offsets, probs = self._rnet(_patches(image, boxes, 24))
        scores = probs[:, 1]
        passed = scores > RNET_THRESHOLD
        if not passed.any():
            return empty
        boxes = _regressed(boxes[passed], offsets[passed])
        scores = scores[passed]
        kept = nms(boxes, scores, RNET_NMS)
        boxes = _squared(boxes[kept])

        offsets, marks, probs = self._onet(_patches(image, boxes, 48))
        scores = probs[:, 1]
        passed = scores > ONET_THRESHOLD
        if not passed.any():
            return empty
        boxes, scores = boxes[passed], scores[passed]
        marks = marks[passed]
        side_w = (boxes[:, 2] - boxes[:, 0])[:, None]
        side_h = (boxes[:, 3] - boxes[:, 1])[:, None]
        landmarks = np.concatenate([boxes[:, 0:1] + side_w * marks[:, 0:5],
                                    boxes[:, 1:2] + side_h * marks[:, 5:10]], axis=1)
        boxes = _regressed(boxes, offsets[passed])
        kept = nms(boxes, scores, ONET_NMS, method="min")
        return boxes[kept], scores[kept], landmarks[kept]

    @staticmethod
    def _pnet_boxes(offsets: np.ndarray, face_prob: np.ndarray, scale_x: float, scale_y: float):
        """PNet cells above threshold as rows x1, y1, x2, y2, score, 4 offsets (image pixels)."""
        ys, xs = np.nonzero(face_prob > PNET_THRESHOLD)
        if not len(ys):
            return np.empty((0, 9))
        x1 = xs * PNET_STRIDE / scale_x
        y1 = ys * PNET_STRIDE / scale_y
        x2 = (xs * PNET_STRIDE + PNET_CELL) / scale_x
        y2 = (ys * PNET_STRIDE + PNET_CELL) / scale_y
        return np.column_stack([x1, y1, x2, y2, face_prob[ys, xs], offsets[ys, xs]])


def _on_tensorflow(traced_fn):
    return lambda x: [np.asarray(t) for t in traced_fn(x)]


def _in_buckets(pool, patches: np.ndarray, bucketed) -> list[np.ndarray]:
    """A network's outputs for any number of patches, in runs of at most PATCH_BUCKETS[-1]."""
    step = PATCH_BUCKETS[-1]
    runs = [bucketed(pool, patches[i:i + step], PATCH_BUCKETS) for i in range(0, len(patches), step)]
    return [np.concatenate(parts) for parts in zip(*runs)]


def _checked_image(image) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy image, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 RGB image, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    return np.ascontiguousarray(image)


def square_crop(image: np.ndarray, box, margin: float = 0.2, size: int = 224) -> np.ndarray:
    """A size x size uint8 crop of the square centred on `box`.

    The square's side is max(w, h) * (1 + 2 * margin): `margin` of the box's longer side is added
    on every side, so the face keeps some context (hair line, chin, cheeks) and is never squashed.
    Where the square leaves the frame it is filled with black rather than shifted, so the face
    stays in the centre of the crop, where classifiers were trained to see it. Shrinking uses
    INTER_AREA (no aliasing), enlarging INTER_CUBIC.
    """
    image = _checked_image(image)
    if size < 1:
        raise ValueError(f"crop size must be positive, got {size}")
    if margin < 0:
        raise ValueError(f"margin must not be negative, got {margin}")
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    if not (x2 > x1 and y2 > y1):
        raise ValueError(f"empty face box {tuple(box)}")
    height, width = image.shape[:2]
    side = max(1, int(round(max(x2 - x1, y2 - y1) * (1.0 + 2.0 * margin))))
    left = int(round((x1 + x2) / 2.0 - side / 2.0))
    top = int(round((y1 + y2) / 2.0 - side / 2.0))
    right, bottom = left + side, top + side

    inside = image[max(top, 0):min(bottom, height), max(left, 0):min(right, width)]
    if inside.size == 0:
        square = np.zeros((side, side, 3), dtype=np.uint8)
    else:
        square = cv2.copyMakeBorder(inside, max(-top, 0), max(bottom - height, 0),
                                    max(-left, 0), max(right - width, 0),
                                    cv2.BORDER_CONSTANT, value=(0, 0, 0))
    if side == size:
        return np.ascontiguousarray(square)
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return cv2.resize(square, (size, size), interpolation=interpolation)
