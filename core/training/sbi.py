"""Self-Blended Images (after Shiohara and Yamasaki, CVPR 2022), written from the paper's idea.

A real face is pasted onto itself: a slightly altered copy (colour, contrast, sharpness, a small
affine shift) is blended back inside a face-shaped mask. The result carries the traces a face swap
leaves (a blending boundary, colour and geometry mismatch) without any identity change, so a
classifier learns those traces rather than particular fake-making methods."""
from __future__ import annotations

import cv2
import numpy as np

from ..faces.detector import KEYPOINT_NAMES

BLEND_RATIO_RANGE = (0.25, 1.0)
SCALE_RANGE = (0.95, 1.05)
MAX_SHIFT = 0.03            # of the image side
MASK_FLOOR = 1.0 / 255.0    # blurred mask tails below one grey level change nothing visible
BLUR_REACH = 3.5            # a Gaussian's tail drops below MASK_FLOOR within this many sigmas
BORDER_KEEP = 0.1           # share of the image side along every edge that is never blended


def keypoint_array(keypoints) -> np.ndarray:
    """5 x 2 float array in KEYPOINT_NAMES order, from a dict or an array-like."""
    if isinstance(keypoints, dict):
        missing = [name for name in KEYPOINT_NAMES if name not in keypoints]
        if missing:
            raise ValueError(f"keypoints lack {', '.join(missing)}")
        points = [keypoints[name] for name in KEYPOINT_NAMES]
    else:
        points = keypoints
    points = np.asarray(points, dtype=np.float64)
    if points.shape != (5, 2) or not np.all(np.isfinite(points)):
        raise ValueError(f"expected 5 finite (x, y) keypoints, got shape {points.shape}")
    return points


def face_outline(keypoints) -> np.ndarray:
    """A face-shaped polygon (N x 2) around the 5 MTCNN keypoints, reaching from the brows to the
    chin and across both cheeks: an ellipse along the eye line, sized from the eye distance and the
    eye-to-mouth distance, joined with the keypoints' own hull pushed outwards."""
    points = keypoint_array(keypoints)
    left_eye, right_eye, _, mouth_left, mouth_right = points
    eyes = (left_eye + right_eye) / 2.0
    mouth = (mouth_left + mouth_right) / 2.0
    eye_distance = max(float(np.linalg.norm(right_eye - left_eye)), 1.0)
    eye_to_mouth = max(float(np.linalg.norm(mouth - eyes)), 0.5 * eye_distance)
    angle = float(np.degrees(np.arctan2(right_eye[1] - left_eye[1], right_eye[0] - left_eye[0])))
    # From about half an eye distance above the eyes (brows) to a little below the mouth (chin).
    down = (mouth - eyes) / eye_to_mouth
    top = eyes - down * 0.55 * eye_distance
    bottom = mouth + down * 0.7 * eye_to_mouth
    centre = (top + bottom) / 2.0
    half_height = float(np.linalg.norm(bottom - top)) / 2.0
    half_width = 0.95 * eye_distance
    ellipse = cv2.ellipse2Poly((int(round(centre[0])), int(round(centre[1]))),
                               (max(int(round(half_width)), 1), max(int(round(half_height)), 1)),
                               int(round(angle)), 0, 360, 10).astype(np.float64)
    centroid = points.mean(axis=0)
    pushed = centroid + (points - centroid) * 1.35
    return cv2.convexHull(np.concatenate([ellipse, pushed]).astype(np.float32))[:, 0, :]


def face_mask(shape, keypoints, rng: np.random.Generator | None = None) -> np.ndarray:
    """H x W float32 mask in [0, 1]: the face outline, randomly deformed (vertex jitter and an
    erosion or dilation), then softened by a random Gaussian blur. rng None gives the plain,
    undeformed, unblurred outline. However it is deformed, the mask stays out of the outer
    BORDER_KEEP of the image, so a crop's background and edges are never blended."""
    height, width = shape[:2]
    outline = face_outline(keypoints)
    points = keypoint_array(keypoints)
    eye_distance = max(float(np.linalg.norm(points[1] - points[0])), 1.0)
    radius, dilate, sigma = 0, False, 0.0
    if rng is not None:
        outline = outline + rng.normal(0.0, 0.04 * eye_distance, size=outline.shape)
        radius = int(round(rng.uniform(0.0, 0.12) * eye_distance))
        dilate = bool(rng.random() < 0.4)
        sigma = float(rng.uniform(0.03, 0.15) * eye_distance)
    # How far beyond the outline the dilation and the blur's visible tail reach.
    reach = (radius if dilate else 0) + BLUR_REACH * sigma
    border = BORDER_KEEP * min(height, width)
    for axis, size in ((0, width), (1, height)):
        low, high = border + reach, size - 1 - border - reach
        if low >= high:
            low = high = (size - 1) / 2.0
        outline[:, axis] = np.clip(outline[:, axis], low, high)
    mask = np.zeros((height, width), dtype=np.uint8)
    cv2.fillPoly(mask, [np.round(outline).astype(np.int32)], 255)
    mask = mask.astype(np.float32) / 255.0
    if rng is None:
        return mask
    if radius >= 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        mask = cv2.dilate(mask, kernel) if dilate else cv2.erode(mask, kernel)
    mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=sigma, sigmaY=sigma)
    mask[mask < MASK_FLOOR] = 0.0
    return mask


def _jitter_colour(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = image.astype(np.float32)
    kind = rng.integers(3)
    if kind == 0:       # per-channel shift, like a different white balance
        x = x + rng.uniform(-20, 20, size=3).astype(np.float32)
    elif kind == 1:     # brightness and contrast
        mean = x.mean()
        x = (x - mean) * rng.uniform(0.8, 1.2) + mean + rng.uniform(-20, 20)
    else:               # saturation
        grey = x.mean(axis=2, keepdims=True)
        x = grey + (x - grey) * rng.uniform(0.7, 1.3)
    return np.clip(x, 0, 255).astype(np.uint8)


def _jitter_sharpness(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sigma = rng.uniform(0.5, 1.5)
    blurred = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma)
    if rng.random() < 0.5:
        return blurred
    amount = rng.uniform(0.3, 1.0)
    return cv2.addWeighted(image, 1.0 + amount, blurred, -amount, 0)


def _small_affine(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    height, width = image.shape[:2]
    scale_x, scale_y = rng.uniform(*SCALE_RANGE, size=2)
    shift_x, shift_y = rng.uniform(-MAX_SHIFT, MAX_SHIFT, size=2) * (width, height)
    cx, cy = width / 2.0, height / 2.0
    matrix = np.array([[scale_x, 0.0, cx - scale_x * cx + shift_x],
                       [0.0, scale_y, cy - scale_y * cy + shift_y]], dtype=np.float64)
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101)


def blend(target: np.ndarray, source: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """mask * source + (1 - mask) * target, rounded to uint8; pixels where mask == 0 are the
    target's own bytes."""
    weight = mask[..., None].astype(np.float32)
    mixed = weight * source.astype(np.float32) + (1.0 - weight) * target.astype(np.float32)
    out = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    untouched = mask <= 0.0
    out[untouched] = target[untouched]
    return out


def make_source(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The altered copy that gets pasted back: at least one appearance change, then a small affine."""
    source = image
    changes = rng.integers(1, 4)     # 1: colour, 2: sharpness, 3: both
    if changes & 1:
        source = _jitter_colour(source, rng)
    if changes & 2:
        source = _jitter_sharpness(source, rng)
    return _small_affine(source, rng)


def self_blend(image: np.ndarray, keypoints, rng: np.random.Generator | None = None,
               blend_ratio: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A self-blended fake of a real face crop: (H x W x 3 uint8 image, H x W float32 mask), where
    image = mask * source + (1 - mask) * input and the mask's peak is the blend ratio
    (random in [0.25, 1] unless given)."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 \
            or image.dtype != np.uint8:
        raise ValueError("self_blend expects an H x W x 3 uint8 RGB image")
    rng = rng if rng is not None else np.random.default_rng()
    source = make_source(image, rng)
    mask = face_mask(image.shape, keypoints, rng)
    ratio = float(rng.uniform(*BLEND_RATIO_RANGE)) if blend_ratio is None else float(blend_ratio)
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"blend_ratio must be in (0, 1], got {ratio}")
    mask = mask * np.float32(ratio)
    return blend(image, source, mask), mask
