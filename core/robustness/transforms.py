"""Everyday things that happen to a clip between a camera and a viewer, the DeeperForensics way:
re-encodes from near-lossless to very lossy, other codecs, smaller frames, a phone's bitrate,
a messenger's chain of encodes, a change of light, a soft lens.

Each transform is fixed (no randomness: every run makes the same clip from the same source) and
keeps every frame of the part it encodes (the first MAX_FRAMES, about 10 s), so the pipeline
samples the same frame indices in the transformed clip as in the untouched reference (`CUT`: the
same frames, losslessly) and the change of P(fake) compares like with like. Audio is dropped; the
frame rate is the source's average rate (a variable-rate clip comes out constant-rate)."""
from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

# Bump when any transform changes, so cached clips and reports made with the old one are not used.
TRANSFORMS_VERSION = 2
MAX_FRAMES = 300


@dataclass(frozen=True)
class Encode:
    """One encode of every frame: an optional pixel change, an optional scale, then a codec."""
    codec: str = "libx264"
    suffix: str = ".mp4"
    options: dict = field(default_factory=dict)
    bit_rate: int | None = None          # bits per second, for codecs run at a bitrate
    scale: float = 1.0                   # frame side factor
    max_short_side: int | None = None    # shrink so the short side is at most this
    pixels: Callable[[np.ndarray], np.ndarray] | None = None
    pix_fmt: str | None = "yuv420p"      # None: the source's own, where x264 takes it


@dataclass(frozen=True)
class Transform:
    name: str
    description: str
    encodes: tuple[Encode, ...]


def _x264(crf: int, **kwargs) -> Encode:
    return Encode(options={"crf": str(crf), "preset": "veryfast"}, **kwargs)


def brightness_contrast(frame: np.ndarray) -> np.ndarray:
    """A brighter, harsher exposure: contrast x1.25 about mid-grey, then +20 levels."""
    x = (frame.astype(np.float32) - 128.0) * 1.25 + 128.0 + 20.0
    return np.clip(x, 0, 255).astype(np.uint8)


def mild_blur(frame: np.ndarray) -> np.ndarray:
    """A soft lens or a slightly missed focus: Gaussian, sigma 1.2 px."""
    return cv2.GaussianBlur(frame, (0, 0), sigmaX=1.2)


# The untouched reference: the same first frames, lossless (x264 QP 0, same 4:2:0 pixels).
CUT = Transform("none", "the clip as it is (its first 300 frames, losslessly; upright)",
                (Encode(options={"qp": "0", "preset": "veryfast"}, pix_fmt=None),))
LOSSLESS_FORMATS = ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "gray")

TRANSFORMS: dict[str, Transform] = {t.name: t for t in (
    Transform("crf18", "H.264 CRF 18 (better than most sources)", (_x264(18),)),
    Transform("crf28", "H.264 CRF 28", (_x264(28),)),
    Transform("crf36", "H.264 CRF 36 (blocky)", (_x264(36),)),
    Transform("crf44", "H.264 CRF 44 (very blocky)", (_x264(44),)),
    Transform("mjpeg", "Motion JPEG at about 0.6 bits per pixel (a webcam or a capture card)",
              (Encode(codec="mjpeg", suffix=".avi", pix_fmt="yuvj420p", bit_rate=-1),)),
    Transform("vp9", "VP9 CRF 40 (a web upload)",
              (Encode(codec="libvpx-vp9", suffix=".webm",
                      options={"crf": "40", "b": "0", "deadline": "realtime",
                               "cpu-used": "8", "row-mt": "1"}),)),
    Transform("half", "half size, H.264 CRF 23", (_x264(23, scale=1 / 2),)),
    Transform("third", "a third of the size, H.264 CRF 23", (_x264(23, scale=1 / 3),)),
    Transform("phone720", "at most 720p, H.264 at 1.5 Mbit/s (a phone's upload)",
              (Encode(max_short_side=720, bit_rate=1_500_000, options={"preset": "veryfast"}),)),
    Transform("messenger", "two encodes in a row: 640 px long side at CRF 30, then CRF 32",
              (_x264(30, scale=-640), _x264(32))),
    Transform("brightness", "brighter and harsher (contrast x1.25, +20 levels), CRF 18",
              (_x264(18, pixels=brightness_contrast),)),
    Transform("blur", "mild blur (Gaussian sigma 1.2 px), CRF 18", (_x264(18, pixels=mild_blur),)),
)}


def _even(value: float) -> int:
    return max(2, int(round(value / 2.0)) * 2)


def output_size(width: int, height: int, encode: Encode) -> tuple[int, int]:
    """Even sides after the encode's scaling. A negative scale means: long side at most -scale px."""
    factor = encode.scale
    if factor < 0:
        factor = min(1.0, -factor / max(width, height))
    if encode.max_short_side is not None:
        factor = min(factor, encode.max_short_side / min(width, height))
    return _even(width * factor), _even(height * factor)


def _frame_rate(stream) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or Fraction(25)
    rate = Fraction(rate).limit_denominator(1001)
    return rate if 1 <= rate <= 240 else Fraction(25)


def _encode_once(source: Path, target: Path, encode: Encode, max_frames: int = MAX_FRAMES) -> int:
    """The first `max_frames` frames of `source` through `encode` into `target`; returns the
    frames written."""
    import av

    from ..media.video import display_rgb, display_rotation

    written = 0
    with av.open(str(source)) as reader:
        if not reader.streams.video:
            raise ValueError(f"{source} has no video stream")
        stream = reader.streams.video[0]
        stream.thread_type = "AUTO"
        rate = _frame_rate(stream)
        with av.open(str(target), "w") as writer:
            out = None
            for frame in reader.decode(stream):
                if written >= max_frames:
                    break
                # A phone's portrait clip is written upright (its pixels turned, no display
                # rotation), so every variant shows the face as the source displays it.
                rotation = display_rotation(frame)
                if out is None:
                    shown = ((frame.width, frame.height) if rotation in (0, 180)
                             else (frame.height, frame.width))
                    width, height = output_size(*shown, encode)
                    out = writer.add_stream(encode.codec, rate=rate)
                    pix_fmt = encode.pix_fmt or (frame.format.name
                                                 if frame.format.name in LOSSLESS_FORMATS
                                                 else "yuv444p")
                    out.width, out.height, out.pix_fmt = width, height, pix_fmt
                    out.options = dict(encode.options)
                    if encode.bit_rate == -1:       # MJPEG: about 0.6 bits per pixel
                        out.bit_rate = int(0.6 * width * height * float(rate))
                    elif encode.bit_rate:
                        out.bit_rate = encode.bit_rate
                if encode.pixels is not None or rotation:
                    image = display_rgb(frame, rotation)
                    if encode.pixels is not None:
                        image = encode.pixels(image)
                    if (image.shape[1], image.shape[0]) != (out.width, out.height):
                        image = cv2.resize(image, (out.width, out.height),
                                           interpolation=cv2.INTER_AREA)
                    new = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                else:
                    # No pixel change: scaled (area) and converted by libswscale, no RGB detour.
                    new = frame.reformat(out.width, out.height, format=out.pix_fmt,
                                         interpolation="AREA")
                new.pts = written
                new.time_base = 1 / rate
                for packet in out.encode(new):
                    writer.mux(packet)
                written += 1
            if out is None:
                raise ValueError(f"{source} has no decodable video frame")
            for packet in out.encode():
                writer.mux(packet)
    return written


def apply(transform: Transform, source: str | Path, target: str | Path) -> int:
    """Write the transformed clip to `target` (its suffix should be the last encode's); returns
    the frames written. The intermediate clips of a chain live in a temporary folder that is
    removed whatever happens."""
    source, target = Path(source), Path(target)
    with tempfile.TemporaryDirectory(prefix="deepfake-transform-") as folder:
        current = source
        for number, encode in enumerate(transform.encodes):
            last = number == len(transform.encodes) - 1
            step_target = target if last else Path(folder) / f"step{number}{encode.suffix}"
            frames = _encode_once(current, step_target, encode)
            current = step_target
    return frames


def suffix(transform: Transform) -> str:
    return transform.encodes[-1].suffix
