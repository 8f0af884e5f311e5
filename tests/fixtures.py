"""Deterministic media fixtures for the tests: synthetic face clips with known face boxes, blank
clips, broken inputs and a Y4M fake-webcam file. Everything is generated on the fly with PyAV;
nothing is read from the shared data folder."""
from __future__ import annotations

import math
from collections.abc import Iterable
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import av
import cv2
import numpy as np
import skimage.data

# The square cut from skimage's astronaut photo that we paste as "the face", and the face box that
# MTCNN reports inside that square (measured once on the full photo: box x 182..265, y 64..171).
ASTRONAUT_CROP = (144, 38, 304, 198)
FACE_IN_CROP = (38, 26, 121, 133)

CONTAINER_BY_SUFFIX = {".mp4": "mp4", ".mov": "mov", ".avi": "avi", ".mkv": "matroska",
                       ".webm": "webm", ".m4a": "mp4"}

# Fast settings per encoder: fixtures must be cheap on two shared cores.
_ENCODER_OPTIONS = {
    "libx264": {"preset": "ultrafast"},
    "libx265": {"preset": "ultrafast", "x265-params": "log-level=error"},
    "libvpx": {"deadline": "realtime", "cpu-used": "8"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"},
    "mpeg4": {"qscale": "3"},
}


@lru_cache(maxsize=8)
def _face_patch(face_size: int) -> np.ndarray:
    x1, y1, x2, y2 = ASTRONAUT_CROP
    crop = skimage.data.astronaut()[y1:y2, x1:x2]
    patch = cv2.resize(crop, (face_size, face_size), interpolation=cv2.INTER_AREA)
    patch.setflags(write=False)
    return patch


@lru_cache(maxsize=8)
def _background(width: int, height: int) -> np.ndarray:
    # A soft gradient with fixed noise: textured enough to look like a scene, static so it
    # costs the encoder almost nothing.
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([60 + 60 * xs / max(width - 1, 1),
                     90 + 40 * ys / max(height - 1, 1),
                     np.full_like(xs, 120)], axis=-1)
    noise = np.random.default_rng(0).normal(0, 6, size=(height, width, 1)).astype(np.float32)
    image = np.clip(base + noise, 0, 255).astype(np.uint8)
    image.setflags(write=False)
    return image


@lru_cache(maxsize=4)  # render_frame asks per frame; a 1-hour clip has 18000 of them
def patch_positions(frames: int = 48, size: tuple[int, int] = (640, 360), faces: int = 1,
                    face_size: int = 150) -> list[list[tuple[int, int]]]:
    """Top-left corner (x, y) of each pasted face square, per frame, in display pixels."""
    width, height = size
    if face_size > min(width, height):
        raise ValueError("face_size does not fit in the frame")
    if faces == 2 and width < 2 * face_size + 0.3 * width:
        raise ValueError("two faces of this size do not fit side by side")
    if faces not in (1, 2):
        raise ValueError("faces must be 1 or 2")
    positions = []
    for i in range(frames):
        u = i / (frames - 1) if frames > 1 else 0.0
        if faces == 1:
            margin = 0.05 * width
            x = margin + u * (width - face_size - 2 * margin)
            y = (height - face_size) / 2 + 0.3 * (height - face_size) * math.sin(2 * math.pi * u)
            row = [(x, y)]
        else:
            # Far apart and moving in opposite directions: one down the left, one up the right.
            mx, my = 0.05 * width, 0.05 * height
            travel = height - face_size - 2 * my
            row = [(mx + 0.1 * width * u, my + travel * u),
                   (width - face_size - mx - 0.1 * width * u, my + travel * (1 - u))]
        positions.append(tuple((int(round(x)), int(round(y))) for x, y in row))
    return tuple(positions)


def face_positions(frames: int = 48, size: tuple[int, int] = (640, 360), faces: int = 1,
                   face_size: int = 150) -> list[list[tuple[float, float, float, float]]]:
    """Ground-truth face boxes (x1, y1, x2, y2) per frame, in display pixels, for the clip that
    `make_face_clip` writes with the same arguments (its `rotation` does not change them)."""
    scale = face_size / (ASTRONAUT_CROP[2] - ASTRONAUT_CROP[0])
    fx1, fy1, fx2, fy2 = (v * scale for v in FACE_IN_CROP)
    return [[(x + fx1, y + fy1, x + fx2, y + fy2) for x, y in row]
            for row in patch_positions(frames, size, faces, face_size)]


def frame_times(frames: int = 48, fps: float = 24, vfr: bool = False) -> list[float]:
    """Presentation time in seconds of each frame. With `vfr` the first half runs at twice the
    rate and the second half at half the rate, so evenly spaced times are not evenly spaced
    indices. Times are whole milliseconds, as the clip stores them."""
    if not vfr:
        return [round(i * 1000 / fps) / 1000 for i in range(frames)]
    times, t = [], 0.0
    for i in range(frames):
        times.append(round(t * 1000) / 1000)
        t += (0.5 if i < frames // 2 else 2.0) / fps
    return times


def render_frame(index: int, *, frames: int = 48, size: tuple[int, int] = (640, 360),
                 faces: int = 1, face_size: int = 150) -> np.ndarray:
    """The display-orientation RGB image of frame `index` of a face clip."""
    width, height = size
    image = _background(width, height).copy()
    patch = _face_patch(face_size)
    for x, y in patch_positions(frames, size, faces, face_size)[index]:
        image[y:y + face_size, x:x + face_size] = patch
    return image


def _encode(path: Path, images: Iterable[np.ndarray], *, fps: float, codec: str,
            rotation: int = 0, times: list[float] | None = None,
            keyint: int | None = None, pix_fmt: str = "yuv420p",
            sample_aspect: Fraction | None = None) -> Path:
    path = Path(path)
    container_format = CONTAINER_BY_SUFFIX.get(path.suffix.lower())
    if container_format is None:
        raise ValueError(f"unsupported fixture container {path.suffix!r}")
    if rotation % 90:
        raise ValueError("rotation must be a multiple of 90")
    if rotation % 360 and container_format == "avi":
        raise ValueError("AVI cannot store rotation metadata")
    if times is not None and container_format == "avi":
        raise ValueError("AVI cannot store variable frame timing")
    turns = (rotation % 360) // 90
    options = dict(_ENCODER_OPTIONS.get(codec, {}))
    if keyint:
        options["g"] = str(keyint)
        if codec == "libx264":
            options["x264-params"] = f"keyint={keyint}:min-keyint={keyint}:scenecut=0"
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate, options=options)
        stream.pix_fmt = pix_fmt
        if times is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if turns:
            stream.set_display_rotation(rotation % 360)
        for i, image in enumerate(images):
            # Store the picture turned the other way, so only a reader that applies the display
            # matrix sees it upright.
            coded = np.ascontiguousarray(np.rot90(image, k=-turns)) if turns else image
            if sample_aspect is not None:
                # Non-square pixels: stored narrower (or wider), stretched back by the reader.
                height, width = coded.shape[:2]
                coded = cv2.resize(coded, (int(round(width / sample_aspect)), height),
                                   interpolation=cv2.INTER_AREA)
            if i == 0:
                stream.height, stream.width = coded.shape[:2]
                if sample_aspect is not None:
                    stream.codec_context.sample_aspect_ratio = sample_aspect
            frame = av.VideoFrame.from_ndarray(coded, format="rgb24")
            if times is not None:
                frame.pts = int(round(times[i] * 1000))
                frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_face_clip(path, *, frames: int = 48, size: tuple[int, int] = (640, 360), fps: float = 24,
                   faces: int = 1, codec: str = "libx264", rotation: int = 0,
                   face_size: int = 150, vfr: bool = False, keyint: int | None = None,
                   pix_fmt: str = "yuv420p", sample_aspect: Fraction | None = None) -> Path:
    """A clip of the astronaut's face (or two of them) moving over a textured background.
    `size` is the display size; with `rotation` the frames are stored turned and a display
    matrix says how to turn them back; with `sample_aspect` (pixel width / height) they are
    stored squeezed to non-square pixels. Face boxes: `face_positions` with the same arguments."""
    images = (render_frame(i, frames=frames, size=size, faces=faces, face_size=face_size)
              for i in range(frames))
    times = frame_times(frames, fps, vfr=True) if vfr else None
    return _encode(Path(path), images, fps=fps, codec=codec, rotation=rotation, times=times,
                   keyint=keyint, pix_fmt=pix_fmt, sample_aspect=sample_aspect)


def make_blank_clip(path, frames: int = 24, size: tuple[int, int] = (320, 240),
                    fps: float = 24) -> Path:
    """A clip with no face: the textured background alone."""
    background = _background(*size)
    return _encode(Path(path), (background for _ in range(frames)), fps=fps, codec="libx264")


def make_one_frame_clip(path) -> Path:
    return make_face_clip(path, frames=1, size=(320, 240), face_size=120)


def make_empty_file(path) -> Path:
    path = Path(path)
    path.write_bytes(b"")
    return path


def make_text_file(path) -> Path:
    """Plain text under a video name, as when someone renames notes.txt to notes.mp4."""
    path = Path(path)
    path.write_text("These are meeting notes, not a video.\n" * 20)
    return path


def make_truncated_mp4(path, *, keep: float = 0.5, faststart: bool = False) -> Path:
    """A real face clip cut short, as an interrupted download leaves it. Without `faststart` the
    index (moov atom) sits at the end and is lost; with it the index survives and the first part
    of the frames can still be decoded."""
    path = Path(path)
    full = path.with_name(path.stem + ".full.mp4")
    make_face_clip(full, frames=48, size=(320, 240), face_size=120)
    if faststart:
        remuxed = path.with_name(path.stem + ".faststart.mp4")
        with av.open(str(full)) as source, \
                av.open(str(remuxed), "w", options={"movflags": "+faststart"}) as target:
            out_stream = target.add_stream_from_template(source.streams.video[0])
            for packet in source.demux(source.streams.video[0]):
                if packet.dts is None:
                    continue
                packet.stream = out_stream
                target.mux(packet)
        full.unlink()
        full = remuxed
    data = full.read_bytes()
    full.unlink()
    path.write_bytes(data[:int(len(data) * keep)])
    return path


def make_audio_only(path, seconds: float = 1.0) -> Path:
    """A file with a sound track and no picture: AAC in .m4a/.mp4, PCM in .mkv/.mov."""
    path = Path(path)
    suffix = path.suffix.lower()
    codec = "aac" if suffix in (".m4a", ".mp4") else "pcm_s16le"
    rate = 16000
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    with av.open(str(path), "w", format=CONTAINER_BY_SUFFIX[suffix]) as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        if codec == "aac":
            samples = tone.astype(np.float32)[None, :]
            sample_format = "fltp"
        else:
            samples = (tone * 32767).astype(np.int16)[None, :]
            sample_format = "s16"
        frame = av.AudioFrame.from_ndarray(samples, format=sample_format, layout="mono")
        frame.sample_rate = rate
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_y4m(path, frames=48, size: tuple[int, int] = (640, 360), fps: int = 24) -> Path:
    """A YUV4MPEG2 (4:2:0) file, e.g. for a browser's fake webcam. `frames` is a count of face
    frames to render, or an iterable of RGB images of `size`."""
    path = Path(path)
    width, height = size
    if width % 2 or height % 2:
        raise ValueError("Y4M 4:2:0 needs even width and height")
    if isinstance(frames, int):
        count = frames
        face_size = min(150, height // 2)
        images = (render_frame(i, frames=count, size=size, face_size=face_size)
                  for i in range(count))
    else:
        images = frames
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{int(fps)}:1 Ip A1:1 C420jpeg\n".encode())
        for image in images:
            if image.shape != (height, width, 3):
                raise ValueError(f"frame shape {image.shape} does not match size {size}")
            out.write(b"FRAME\n")
            # OpenCV's I420 layout is exactly Y4M's: full Y plane, then U, then V.
            out.write(cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


# --- hostile and broken videos (issue: hardening) ---------------------------------------------

def make_huge_header_clip(path, width: int = 16000, height: int = 16000) -> Path:
    """A YUV4MPEG2 file whose text header claims enormous frames; the payload is a few bytes, so
    only a reader that trusts the header would allocate gigabytes."""
    path = Path(path)
    header = f"YUV4MPEG2 W{width} H{height} F25:1 Ip A1:1 C420jpeg\n".encode()
    path.write_bytes(header + (b"FRAME\n" + b"\x80" * 4096) * 3)
    return path


def make_tiny_clip(path, size: tuple[int, int] = (2, 2), frames: int = 20) -> Path:
    """A 2x2 video (MPEG-4 Part 2 accepts it; H.264 needs more)."""
    path = Path(path)
    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), i * 10 % 256, np.uint8),
                                               format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_retimed_clip(path, pts_of) -> Path:
    """A face clip remuxed into Matroska with each packet's timestamp replaced by
    pts_of(packet number) (in milliseconds): all zero, or absurdly far apart."""
    path = Path(path)
    source = make_face_clip(path.with_name(path.stem + ".src.mp4"), frames=24, size=(320, 240),
                            face_size=120)
    with av.open(str(source)) as reader, av.open(str(path), "w", format="matroska") as writer:
        in_stream = reader.streams.video[0]
        out_stream = writer.add_stream_from_template(in_stream)
        for number, packet in enumerate(p for p in reader.demux(in_stream) if p.dts is not None):
            packet.stream = out_stream
            packet.pts = packet.dts = pts_of(number)
            writer.mux(packet)
    source.unlink()
    return path


def make_corrupted_clip(path, *, start: float = 0.5, share: float = 0.2, seed: int = 0) -> Path:
    """A face clip with `share` of its bytes overwritten with noise from `start` (a fraction of the
    file) on: damaged in the middle, intact at both ends."""
    path = Path(path)
    make_face_clip(path, frames=48, size=(320, 240), face_size=120)
    data = bytearray(path.read_bytes())
    first, count = int(len(data) * start), int(len(data) * share)
    data[first:first + count] = np.random.default_rng(seed).integers(
        0, 256, count, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def make_many_streams_clip(path, streams: int = 40, frames: int = 10) -> Path:
    """A Matroska file with `streams` small video streams; the first shows the face."""
    path = Path(path)
    faces = [render_frame(i, frames=frames, size=(160, 120), face_size=80) for i in range(frames)]
    with av.open(str(path), "w", format="matroska") as container:
        encoders = []
        for _ in range(streams):
            stream = container.add_stream("mpeg4", rate=10)
            stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
            encoders.append(stream)
        for i in range(frames):
            for k, stream in enumerate(encoders):
                image = faces[i] if k == 0 else np.full((120, 160, 3), 90, np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
        for stream in encoders:
            for packet in stream.encode():
                container.mux(packet)
    return path


def make_two_hour_clip(path) -> Path:
    """Two hours of small frames (160x120 at 1 fps, a keyframe a minute): long, not large."""
    return make_face_clip(path, frames=7200, size=(160, 120), fps=1, face_size=80, keyint=60)


# --- Photos -----------------------------------------------------------------------------------

# EXIF Orientation -> the transpose that turns the upright picture into the stored one (the
# inverse of what a viewer applies to show it upright).
_STORED_FOR_ORIENTATION = {
    2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE",
    6: "ROTATE_90", 7: "TRANSVERSE", 8: "ROTATE_270"}


def photo_face_box(size: tuple[int, int] = (640, 480), face_size: int = 200,
                   corner: tuple[int, int] = (60, 40)) -> tuple[float, float, float, float]:
    """The face box (x1, y1, x2, y2) in the upright photo that `make_face_photo` writes with the
    same arguments."""
    scale = face_size / (ASTRONAUT_CROP[2] - ASTRONAUT_CROP[0])
    x, y = corner
    fx1, fy1, fx2, fy2 = FACE_IN_CROP
    return (x + fx1 * scale, y + fy1 * scale, x + fx2 * scale, y + fy2 * scale)


def render_photo(size: tuple[int, int] = (640, 480), face_size: int = 200,
                 corner: tuple[int, int] = (60, 40)) -> np.ndarray:
    """The upright RGB picture: the astronaut's face off-centre (top left) on the background,
    so a photo shown the wrong way round puts the face somewhere else."""
    image = _background(*size).copy()
    x, y = corner
    image[y:y + face_size, x:x + face_size] = _face_patch(face_size)
    return image


def make_face_photo(path, *, size: tuple[int, int] = (640, 480), face_size: int = 200,
                    corner: tuple[int, int] = (60, 40), orientation: int = 1,
                    mode: str = "RGB", **save_options) -> Path:
    """A photo in the format its suffix names (JPEG, PNG, WebP, BMP), stored turned or mirrored
    as EXIF `orientation` says a viewer must undo; `mode` converts it first (L, RGBA, P, CMYK,
    I;16). Upright it is `render_photo(size, face_size, corner)`."""
    from PIL import Image

    path = Path(path)
    picture = Image.fromarray(render_photo(size, face_size, corner))
    if orientation != 1:
        picture = picture.transpose(getattr(Image.Transpose,
                                            _STORED_FOR_ORIENTATION[orientation]))
    if mode == "I;16":
        grey = np.asarray(picture.convert("L"), dtype=np.uint16) * 257
        picture = Image.fromarray(grey)
    elif mode != "RGB":
        picture = picture.convert(mode)
    if orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = orientation
        save_options["exif"] = exif
    picture.save(path, **save_options)
    return path


def make_truncated_jpeg(path, keep: float = 0.5) -> Path:
    """The first part of a face photo's JPEG, as an interrupted download leaves it."""
    path = Path(path)
    make_face_photo(path.with_suffix(".whole.jpg"))
    data = path.with_suffix(".whole.jpg").read_bytes()
    path.with_suffix(".whole.jpg").unlink()
    path.write_bytes(data[:int(len(data) * keep)])
    return path


def make_png_header(path, width: int, height: int) -> Path:
    """A PNG that claims width x height pixels in a few dozen bytes (one empty compressed row):
    a decompression bomb's header, which an honest reader refuses before decoding anything."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    path = Path(path)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * (1 + 3 * min(width, 64))))
                     + chunk(b"IEND", b""))
    return path


def extract_clip_faces(clips_folder: Path, out: Path, clips: list[dict], settings, *,
                       frames: int):
    """Face clips made from `clips` (each: name, label, split, size and any further label
    columns), listed in a labels CSV and cut by `python -m core extract`'s own code into `out`;
    returns the extract report."""
    import csv

    from core.training.extract import extract, tasks_from_labels

    columns = [k for k in clips[0] if k not in ("name", "size")]
    labels = Path(clips_folder) / "labels.csv"
    with labels.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", *columns])
        for clip in clips:
            make_face_clip(Path(clips_folder) / f"{clip['name']}.mp4", frames=frames,
                           size=clip["size"], face_size=100)
            writer.writerow([f"{clip['name']}.mp4", *(clip[k] for k in columns)])
    return extract(tasks_from_labels(labels), out, settings, workers=1, progress=False)
