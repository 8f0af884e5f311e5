"""Face boxes drawn on frames, and the annotated H.264 MP4 written with PyAV."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from .. import atomic
from ..errors import CorruptVideoError
from .video import VideoInfo, display_size, iter_yuv420, probe

COLOURS = {                      # RGB
    "REAL": (0, 200, 0),
    "FAKE": (220, 0, 0),
    "UNCERTAIN": (255, 176, 0),  # amber
}
_OTHER_COLOUR = (160, 160, 160)
_DARK_TEXT_ON = {"UNCERTAIN"}    # white on amber is hard to read

# x264 presets by output size, the fastest for the biggest frames: a 10 s clip at 1280x720 takes
# about 7 CPU-seconds with "veryfast" and a 1080p one about 9 with "superfast" (decode, drawing
# and encoding together), so either stays near 4 s on two cores.
X264_PRESETS = ((1280 * 720, "veryfast"), (1920 * 1088, "superfast"), (None, "ultrafast"))
X264_CRF = "23"


@dataclass
class FaceBox:
    box: tuple[float, float, float, float]   # x1, y1, x2, y2 in the drawn image's pixels
    label: str          # REAL / FAKE / UNCERTAIN
    score: float        # calibrated P(fake)
    person_id: int


def _style(height: int, width: int) -> tuple[int, float]:
    short = min(height, width)
    # At least 2 pixels: a 1-pixel line loses its colour to 4:2:0 chroma subsampling.
    thickness = max(2, int(round(short / 270)))
    font_scale = max(0.35, short / 900)
    return thickness, font_scale


_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _tag(face: FaceBox, thickness: int, font_scale: float) -> tuple[str, int, int, int, int]:
    """Text of the tag, its text width and height, padding and full tag height."""
    text = f"#{face.person_id} {face.label} {face.score:.2f}"
    text_thickness = max(1, thickness // 2)
    (text_w, text_h), baseline = cv2.getTextSize(text, _FONT, font_scale, text_thickness)
    pad = max(2, thickness)
    return text, text_w, text_h, pad, text_h + baseline + 2 * pad


def _draw_face(out: np.ndarray, face: FaceBox, thickness: int, font_scale: float,
               offset: tuple[int, int] = (0, 0), frame_size: tuple[int, int] | None = None):
    """Draw one face in place. `out` may be a window of a larger frame: `offset` is the window's
    top-left corner in that frame and `frame_size` (width, height) the frame's size, so the tag
    lands exactly where it would on the whole frame."""
    width, height = frame_size or (out.shape[1], out.shape[0])
    ox, oy = offset
    colour = COLOURS.get(face.label, _OTHER_COLOUR)
    x1, y1, x2, y2 = _clipped_box(face.box, width, height)
    if x2 <= x1 or y2 <= y1:
        return
    cv2.rectangle(out, (x1 - ox, y1 - oy), (x2 - ox, y2 - oy), colour, thickness, cv2.LINE_8)
    text, text_w, text_h, pad, tag_h = _tag(face, thickness, font_scale)
    # Above the box when there is room, otherwise just inside its top edge.
    tag_y1 = y1 - tag_h if y1 - tag_h >= 0 else y1
    tag_x1 = max(0, min(x1, width - text_w - 2 * pad))
    tag_x2 = min(width - 1, tag_x1 + text_w + 2 * pad)
    cv2.rectangle(out, (tag_x1 - ox, tag_y1 - oy), (tag_x2 - ox, tag_y1 + tag_h - oy), colour,
                  cv2.FILLED)
    text_colour = (0, 0, 0) if face.label in _DARK_TEXT_ON else (255, 255, 255)
    cv2.putText(out, text, (tag_x1 + pad - ox, tag_y1 + pad + text_h - oy), _FONT, font_scale,
                text_colour, max(1, thickness // 2), cv2.LINE_AA)


def _clipped_box(box, width: int, height: int) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    return (max(0, min(x1, width - 1)), max(0, min(y1, height - 1)),
            max(0, min(x2, width - 1)), max(0, min(y2, height - 1)))


def draw_faces(image: np.ndarray, faces: list[FaceBox]) -> np.ndarray:
    """A copy of `image` (RGB) with a coloured box and a "#id LABEL score" tag per face; line
    thickness and text size follow the image size."""
    out = np.ascontiguousarray(image).copy()
    thickness, font_scale = _style(*out.shape[:2])
    for face in faces:
        _draw_face(out, face, thickness, font_scale)
    return out


def _draw_faces_i420(data: np.ndarray, width: int, height: int, faces: list[FaceBox]):
    """Draw on an I420 frame in place, converting only the window around each face to RGB and
    back: a whole 1080p frame would cost two full colour conversions per frame."""
    thickness, font_scale = _style(height, width)
    # The planes are cut from the flat buffer: as rows of `width`, a chroma plane of a frame
    # whose height is not a multiple of 4 (528x306) ends in the middle of a row.
    flat = data.reshape(-1)
    luma, quarter = height * width, (height // 2) * (width // 2)
    y_plane = flat[:luma].reshape(height, width)
    u_plane = flat[luma:luma + quarter].reshape(height // 2, width // 2)
    v_plane = flat[luma + quarter:luma + 2 * quarter].reshape(height // 2, width // 2)
    for face in faces:
        x1, y1, x2, y2 = _clipped_box(face.box, width, height)
        if x2 <= x1 or y2 <= y1:
            continue
        _, text_w, _, pad, tag_h = _tag(face, thickness, font_scale)
        # The window holds the box, its tag (above or inside) and the line width, on even
        # coordinates so it maps onto whole chroma samples.
        wx1 = max(0, min(x1, width - text_w - 2 * pad) - thickness) & ~1
        wy1 = max(0, y1 - tag_h - thickness) & ~1
        wx2 = min(width, max(x2, x1 + text_w + 2 * pad) + thickness + 2) & ~1
        wy2 = min(height, y2 + thickness + 2) & ~1
        win_w, win_h = wx2 - wx1, wy2 - wy1
        if win_w < 2 or win_h < 2:
            continue
        window = np.empty((win_h * 3 // 2, win_w), np.uint8)
        window[:win_h] = y_plane[wy1:wy2, wx1:wx2]
        window[win_h:].reshape(-1)[:] = np.concatenate([
            u_plane[wy1 // 2:wy2 // 2, wx1 // 2:wx2 // 2].ravel(),
            v_plane[wy1 // 2:wy2 // 2, wx1 // 2:wx2 // 2].ravel()])
        rgb = cv2.cvtColor(window, cv2.COLOR_YUV2RGB_I420)
        _draw_face(rgb, face, thickness, font_scale, offset=(wx1, wy1),
                   frame_size=(width, height))
        window = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
        chroma = window[win_h:].reshape(-1)
        quarter = (win_h // 2) * (win_w // 2)
        y_plane[wy1:wy2, wx1:wx2] = window[:win_h]
        u_plane[wy1 // 2:wy2 // 2, wx1 // 2:wx2 // 2] = chroma[:quarter].reshape(win_h // 2, -1)
        v_plane[wy1 // 2:wy2 // 2, wx1 // 2:wx2 // 2] = chroma[quarter:].reshape(win_h // 2, -1)


def _preset(width: int, height: int) -> str:
    for max_pixels, preset in X264_PRESETS:
        if max_pixels is None or width * height <= max_pixels:
            return preset
    return X264_PRESETS[-1][1]


def scaled_boxes(faces: list[FaceBox], sx: float, sy: float) -> list[FaceBox]:
    """The boxes in an image resized by sx horizontally and sy vertically."""
    if sx == 1.0 and sy == 1.0:
        return faces
    return [FaceBox(box=(f.box[0] * sx, f.box[1] * sy, f.box[2] * sx, f.box[3] * sy),
                    label=f.label, score=f.score, person_id=f.person_id) for f in faces]


def write_annotated_video(src_path, out_path, faces_at: Callable[[int], list[FaceBox]],
                          info: VideoInfo | None = None,
                          max_long_side: int | None = None) -> dict:
    """Decode every frame of `src_path`, draw `faces_at(frame_index)` on it (boxes in full-size
    display pixels) and encode an H.264 / yuv420p MP4 that browsers play, with the source's
    frame count and average frame rate, downscaled so the long side is at most `max_long_side`.
    The file appears at `out_path` only when complete. Returns path, width, height, frames,
    seconds (the clip's length) and elapsed (wall time spent)."""
    started = time.perf_counter()
    info = info or probe(src_path)
    out_path = Path(out_path)
    width, height = display_size(info, max_long_side)
    sx, sy = width / info.width, height / info.height
    # yuv420p needs even dimensions: iter_yuv420 drops an odd last column / row.
    width, height = width - width % 2, height - height % 2
    rate = Fraction(info.fps).limit_denominator(1001)

    frames = 0
    with atomic.atomic_path(out_path, suffix=".part.mp4") as temp_path:
        with av.open(str(temp_path), "w", format="mp4",
                     options={"movflags": "+faststart"}) as container:
            stream = container.add_stream(
                "libx264", rate=rate, options={"preset": _preset(width, height), "crf": X264_CRF})
            stream.width, stream.height = width, height
            stream.pix_fmt = "yuv420p"
            stream.thread_type = "AUTO"
            for frame in iter_yuv420(src_path, info=info, max_long_side=max_long_side):
                if frames == 0:
                    # Keep the source's colour tags: its YUV passes through untouched.
                    stream.codec_context.colorspace = frame.colorspace
                    stream.codec_context.color_range = frame.color_range
                faces = faces_at(frame.index)
                if faces:
                    _draw_faces_i420(frame.data, width, height, scaled_boxes(faces, sx, sy))
                video_frame = av.VideoFrame.from_ndarray(frame.data, format="yuv420p")
                video_frame.pts = frames
                video_frame.time_base = 1 / rate
                for packet in stream.encode(video_frame):
                    container.mux(packet)
                frames += 1
            for packet in stream.encode():
                container.mux(packet)
        if frames == 0:
            raise CorruptVideoError(f"no frame of {Path(src_path).name} could be decoded")
    return {"path": str(out_path), "width": width, "height": height, "frames": frames,
            "seconds": frames / float(rate), "elapsed": time.perf_counter() - started}
