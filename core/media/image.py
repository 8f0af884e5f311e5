"""Reading photos with Pillow: JPEG, PNG, WebP and BMP, turned upright by their EXIF orientation,
as H x W x 3 uint8 RGB with a `VideoInfo` of kind "image" (one frame, no duration), so a photo
goes through the same detector, classifiers, verdict rules and reports as a video's frames.

Every way a file can fail to be a usable photo ends in an `ImageError` whose message is one line
a person can act on: not an image, truncated, too small to hold a face, or over the pixel limit,
which is checked from the header before any pixel is decoded (a decompression bomb never is)."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageError, ImageLimitError, first_line
from .video import VideoInfo

# Pillow's own names of the formats we take, and how a person knows them.
IMAGE_FORMATS = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP", "BMP": "BMP"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp")
# MTCNN's smallest face is 12 px in the image it searches; a photo this small holds none we judge.
MIN_IMAGE_SIDE = 32

# EXIF Orientation -> degrees counter-clockwise the stored picture turns to be upright (as
# VideoInfo.rotation); 2, 4, 5 and 7 also mirror it.
_EXIF_ORIENTATION = 0x0112
_ROTATION_OF_ORIENTATION = {1: 0, 2: 0, 3: 180, 4: 180, 5: 270, 6: 270, 7: 90, 8: 90}

# Leading bytes of the formats we take: a photo saved under a video's name is still a photo.
_SIGNATURES = ((0, b"\xff\xd8\xff"), (0, b"\x89PNG\r\n\x1a\n"), (8, b"WEBP"), (0, b"BM"))

# Our own limit (a setting, below Pillow's) is checked from the header right after opening, so
# Pillow's warning about large images says nothing we do not already act on.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def is_image_file(path: str | Path) -> bool:
    """Whether `path` should be read as a photo: by its leading bytes, or, for a file that starts
    like neither a photo nor a video (text named .jpg), by its name, so its error speaks of
    photos."""
    from .video import known_container

    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError:
        return path.suffix.lower() in IMAGE_SUFFIXES
    if any(head[offset:offset + len(magic)] == magic for offset, magic in _SIGNATURES):
        return True
    return path.suffix.lower() in IMAGE_SUFFIXES and known_container(path) is None


def annotated_file_name(path: str | Path, stem: str) -> str:
    """The annotated copy's file name for the input at `path`: a JPEG for a photo, else MP4."""
    return f"{stem}.annotated.{'jpg' if is_image_file(path) else 'mp4'}"


def _megapixels(pixels: float) -> str:
    return f"{pixels / 1e6:.0f} megapixels" if pixels >= 1e6 else f"{pixels / 1e6:.2f} megapixels"


def _opened(path: Path, max_pixels: int) -> Image.Image:
    accepted = ", ".join(IMAGE_FORMATS.values())
    try:
        image = Image.open(path, formats=list(IMAGE_FORMATS))
    except Image.DecompressionBombError as error:
        found = re.search(r"\((\d+) pixels\)", str(error))
        claim = f"claims {_megapixels(int(found.group(1)))}" if found else "is too large"
        raise ImageLimitError(f"{path.name} {claim}; the limit is {_megapixels(max_pixels)} "
                              "(setting max_image_pixels)") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path.name} is not a photo this app reads ({accepted}), or its "
                         "header is damaged") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"{path.name} is damaged: {first_line(error)}") from None
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageLimitError(
            f"{path.name} is {width}x{height} ({_megapixels(width * height)}); the limit is "
            f"{_megapixels(max_pixels)} (setting max_image_pixels)")
    if min(width, height) < MIN_IMAGE_SIDE:
        image.close()
        raise ImageError(f"{path.name} is {width}x{height} px; a photo needs at least "
                         f"{MIN_IMAGE_SIDE} px a side to hold a face")
    return image


def _as_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grey: Pillow's RGB conversion clips at 255 and would turn the photo white.
        grey = np.asarray(image, dtype=np.uint32) >> 8
        return np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent parts become white, as a browser shows them on this app's page.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def read_image(path: str | Path, *, max_pixels: int = 50_000_000
               ) -> tuple[np.ndarray, VideoInfo, list[str]]:
    """(upright RGB image, its description, warnings for a person) of the photo at `path`.
    Raises ImageError (ImageLimitError beyond `max_pixels`)."""
    from .video import _checked_path

    path = _checked_path(path)
    notes: list[str] = []
    with _opened(path, max_pixels) as image:
        kind = image.format
        frames = getattr(image, "n_frames", 1)
        if frames > 1:
            notes.append(f"an animated {IMAGE_FORMATS[kind]} of {frames} frames: only its "
                         "first frame was judged")
        try:
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
        except Exception:  # noqa: BLE001 - a damaged EXIF block leaves the picture as stored
            orientation = 1
            notes.append("its EXIF block is damaged; the photo is shown as stored")
        try:
            upright = ImageOps.exif_transpose(image) if orientation != 1 else image
            pixels = _as_rgb(upright)
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise ImageError(f"{path.name} is truncated or damaged ({first_line(error)}); "
                             "re-download or re-export it") from None
    height, width = pixels.shape[:2]
    info = VideoInfo(path=str(path), width=width, height=height, fps=0.0, duration=0.0,
                     frame_count=1, rotation=_ROTATION_OF_ORIENTATION.get(orientation, 0),
                     codec=kind.lower(), container=kind.lower(), kind="image")
    return np.ascontiguousarray(pixels), info, notes


def write_jpeg(path: str | Path, image: np.ndarray, quality: int = 92) -> None:
    """An RGB image as a baseline JPEG, appearing at `path` only when complete."""
    from ..atomic import atomic_path

    with atomic_path(path, suffix=".part.jpg") as temp_path:
        Image.fromarray(image).save(temp_path, "JPEG", quality=quality)
