"""Training-batch augmentation: what happens to faces between a camera and our detector.

Horizontal flip, colour jitter, JPEG recompression, blur and down-then-up scaling, each applied
with its own probability. Only ever used on training batches; validation sees untouched crops."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from ..verdicts.views import jpeg_recompress


@dataclass(frozen=True)
class AugmentSettings:
    flip: float = 0.5          # probability of each transform
    colour: float = 0.5
    jpeg: float = 0.3
    blur: float = 0.2
    downscale: float = 0.2
    jpeg_quality: tuple[int, int] = (40, 95)
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    downscale_factor: tuple[float, float] = (0.35, 0.8)
    jpeg_twice: float = 0.0    # of the JPEG'd faces, the share compressed once more (a chain)

    def to_dict(self) -> dict:
        return asdict(self)


# The presets `--augment` takes. "compression" is for footage re-encoded hard (FF++ c40-like, or a
# clip through a messaging app): a model trained on c23 faces alone moved its fake scores below
# its threshold on such clips, so JPEG and down-up scaling come often and go low.
AUGMENT_PRESETS = {
    "basic": AugmentSettings(),
    "compression": AugmentSettings(jpeg=0.6, downscale=0.4, blur=0.25,
                                   jpeg_quality=(15, 90), downscale_factor=(0.3, 0.9)),
    # What happens to a clip between a camera and a viewer (the robustness benchmark's transforms,
    # core.robustness): re-encodes from near-lossless to CRF 44-like, 1/3..1 down-up scaling,
    # brightness/contrast, mild blur, a second encode as in a messenger chain. Applied to reals,
    # SBI fakes and real fakes alike, so that no encoding is a cue for the label.
    "everyday": AugmentSettings(colour=0.6, jpeg=0.75, downscale=0.5, blur=0.3,
                                jpeg_quality=(20, 95), downscale_factor=(0.33, 1.0),
                                blur_sigma=(0.3, 1.2), jpeg_twice=0.3),
}


def colour_jitter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation, each by a random factor."""
    x = image.astype(np.float32)
    x = x * rng.uniform(0.8, 1.2)
    mean = x.mean()
    x = (x - mean) * rng.uniform(0.8, 1.2) + mean
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * rng.uniform(0.8, 1.2)
    return np.clip(x, 0, 255).astype(np.uint8)


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigmaX=float(sigma))


def down_up_scale(image: np.ndarray, factor: float) -> np.ndarray:
    height, width = image.shape[:2]
    small = (max(1, round(width * factor)), max(1, round(height * factor)))
    reduced = cv2.resize(image, small, interpolation=cv2.INTER_AREA)
    return cv2.resize(reduced, (width, height), interpolation=cv2.INTER_LINEAR)


def augment(image: np.ndarray, rng: np.random.Generator,
            settings: AugmentSettings = AugmentSettings()) -> np.ndarray:
    """One randomly augmented copy of an H x W x 3 uint8 RGB image (same shape and dtype)."""
    out = image
    if rng.random() < settings.flip:
        out = out[:, ::-1]
    if rng.random() < settings.colour:
        out = colour_jitter(out, rng)
    if rng.random() < settings.downscale:
        out = down_up_scale(out, rng.uniform(*settings.downscale_factor))
    if rng.random() < settings.blur:
        out = gaussian_blur(out, rng.uniform(*settings.blur_sigma))
    if rng.random() < settings.jpeg:
        out = jpeg_recompress(np.ascontiguousarray(out), rng.integers(*settings.jpeg_quality, endpoint=True))
        if rng.random() < settings.jpeg_twice:
            out = jpeg_recompress(out, rng.integers(*settings.jpeg_quality, endpoint=True))
    return np.ascontiguousarray(out)
