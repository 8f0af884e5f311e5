"""Reading videos with PyAV: probing, evenly spaced sampling and every-frame iteration.

Every image leaves this module as H x W x 3 uint8 RGB in display orientation: the display matrix
that phones write (rotation metadata) is applied with np.rot90, so portrait clips come out
portrait, and non-square pixels (anamorphic DVD and broadcast clips) are stretched to square
ones, so a 720x576 16:9 clip comes out 1024x576. `frame_index` is the 0-based ordinal of the
decoded frame, counted the same way by `sample_frames` and `iter_frames`, so indices from one
line up with the other.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import numpy as np

from ..errors import (CorruptVideoError, EmptyFileError, NotAVideoError, NoVideoStreamError,
                      TooFewFramesError, VideoLimitError)

_LOG = logging.getLogger(__name__)

# Past this length `sample_frames` seeks to each target instead of decoding the whole clip:
# decoding an hour of 1080p would take minutes, 32 seeks take seconds.
LONG_CLIP_SECONDS = 120.0

# A damaged stretch is skipped packet by packet; this many failures in a row means the rest of
# the file is gone (a truncated download) and decoding stops with what it has.
_MAX_CONSECUTIVE_BAD_PACKETS = 25

# Leading bytes of containers we know; a file that starts like one but will not open is damaged,
# anything else is simply not a video.
_SIGNATURES = (
    (4, (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"), "MP4/MOV"),
    (0, (b"\x1a\x45\xdf\xa3",), "Matroska/WebM"),
    (0, (b"RIFF",), "AVI"),
    (0, (b"FLV",), "FLV"),
    (0, (b"\x00\x00\x01\xba",), "MPEG program stream"),
)


@dataclass(frozen=True)
class VideoInfo:
    path: str
    width: int          # display width (after rotation, in square pixels)
    height: int         # display height (after rotation, in square pixels)
    fps: float          # average frame rate
    duration: float     # seconds
    frame_count: int    # from the container, or estimated from duration * fps when missing
    rotation: int       # degrees counter-clockwise the stored frames turn to display: 0/90/180/270
    codec: str
    container: str
    # "video", or "image" for a photo: one frame, fps and duration 0, rotation from its EXIF
    kind: str = "video"
    sample_aspect: float = 1.0   # a stored pixel's width / height (1: square pixels)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DecodeStats:
    """What decoding met: packets read and packets that would not decode (damaged stretches)."""
    packets: int = 0
    bad_packets: int = 0
    gave_up: bool = False       # the rest of the file was given up as damaged
    retimed_frames: int = 0     # frames whose timestamp did not advance (counted from the rate)


@dataclass
class Frame:
    index: int          # 0-based ordinal of the decoded frame in the clip
    time: float         # seconds from start
    image: np.ndarray   # H x W x 3 uint8 RGB, display orientation


def _checked_path(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise NotAVideoError(f"No such file: {path}")
    if path.is_dir():
        raise NotAVideoError(f"{path} is a folder, not a video file")
    if path.stat().st_size == 0:
        raise EmptyFileError(f"{path.name} is empty (0 bytes)")
    return path


def known_container(path: Path) -> str | None:
    with open(path, "rb") as handle:
        head = handle.read(16)
    for offset, magics, name in _SIGNATURES:
        if any(head[offset:offset + len(magic)] == magic for magic in magics):
            return name
    return None


def _open(path: Path):
    try:
        return av.open(str(path), mode="r")
    except PermissionError:
        raise NotAVideoError(f"{path.name} cannot be read: permission denied") from None
    except (av.error.FFmpegError, ValueError, OSError) as error:
        kind = known_container(path)
        if kind == "MP4/MOV":
            raise CorruptVideoError(
                f"{path.name} is truncated or damaged: its MP4 index (moov atom) is missing or "
                f"unreadable; re-download or re-export the video") from error
        if kind is not None:
            raise CorruptVideoError(
                f"{path.name} looks like {kind} but is truncated or damaged") from error
        raise NotAVideoError(f"{path.name} is not a video file FFmpeg can read") from error


def _video_stream(container, path: Path):
    streams = [s for s in container.streams.video
               # Cover art in music files shows up as a one-picture video stream.
               if not s.disposition & av.stream.Disposition.attached_pic]
    if not streams:
        kinds = sorted({s.type for s in container.streams})
        found = f" (it has only {', '.join(kinds)})" if kinds else ""
        raise NoVideoStreamError(f"{path.name} has no video stream{found}")
    return streams[0]


def _decoded(container, stream, stats: DecodeStats | None = None) -> Iterator[av.VideoFrame]:
    """Decode packet by packet so one damaged packet costs one frame, not the rest of the clip."""
    stats = stats if stats is not None else DecodeStats()
    bad_in_a_row = 0
    for packet in container.demux(stream):
        stats.packets += 1
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            stats.bad_packets += 1
            bad_in_a_row += 1
            if bad_in_a_row >= _MAX_CONSECUTIVE_BAD_PACKETS:
                _LOG.warning("giving up on %s after %d damaged packets in a row",
                             container.name, bad_in_a_row)
                stats.gave_up = True
                return
            continue
        bad_in_a_row = 0
        yield from frames


def display_rotation(frame: av.VideoFrame) -> int:
    # PyAV reports the display matrix as counter-clockwise degrees in [-180, 180].
    return int(round((frame.rotation or 0) / 90.0)) * 90 % 360


def display_rgb(frame: av.VideoFrame, rotation: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """RGB in display orientation; `size` is the (width, height) wanted after rotation."""
    if size is None:
        image = frame.to_ndarray(format="rgb24")
    else:
        width, height = size if rotation in (0, 180) else size[::-1]
        image = frame.reformat(width, height, format="rgb24",
                               interpolation="AREA").to_ndarray()
    if rotation:
        image = np.ascontiguousarray(np.rot90(image, k=rotation // 90))
    return image


def _time_origin(stream) -> float:
    if stream.start_time is not None and stream.time_base is not None:
        return float(stream.start_time * stream.time_base)
    return 0.0


def _frame_time(frame: av.VideoFrame, origin: float, index: int, fps: float) -> float:
    if frame.time is None:
        return index / fps
    return max(0.0, float(frame.time) - origin)


def _timed(frames, origin: float, fps: float, stats: DecodeStats | None = None):
    """(index, time, frame) with times that always advance: a frame whose timestamp is missing,
    repeated or going back (a broken muxer writes all zeros) is placed one frame after the last."""
    last = None
    for index, frame in enumerate(frames):
        time = _frame_time(frame, origin, index, fps)
        if last is not None and time <= last:
            time = last + 1.0 / fps
            if stats is not None:
                stats.retimed_frames += 1
        last = time
        yield index, time, frame


def _container_name(container, path: Path) -> str:
    names = container.format.name.split(",")
    suffix = path.suffix.lower().lstrip(".")
    if suffix in names:
        return suffix
    if "matroska" in names and suffix == "mkv":
        return "matroska"
    return names[0]


def _check_frame_size(path: Path, width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise VideoLimitError(
            f"{path.name} has {width}x{height} frames ({width * height / 1e6:.0f} megapixels); "
            f"the limit is {max_pixels / 1e6:.0f} megapixels per frame (setting max_frame_pixels)")


def probe(path, *, max_pixels: int | None = None, max_duration: float | None = None) -> VideoInfo:
    """Describe a video, decoding only its first two frames to prove that it decodes at all.
    max_pixels / max_duration: refuse (VideoLimitError) a video whose header claims larger frames
    (checked before any decoding) or a longer running time."""
    path = _checked_path(path)
    with _open(path) as container:
        stream = _video_stream(container, path)
        # From the header alone first, before a decoder allocates frames of that size.
        _check_frame_size(path, stream.codec_context.width or 0,
                          stream.codec_context.height or 0, max_pixels)
        first: list[av.VideoFrame] = []
        for frame in _decoded(container, stream):
            first.append(frame)
            if len(first) == 2:
                break
        if not first:
            raise CorruptVideoError(f"{path.name} is damaged: no frame of it could be decoded")
        if len(first) < 2:
            raise TooFewFramesError(
                f"{path.name} has a single frame; the detector needs at least 2 frames")

        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        duration = 0.0
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / av.time_base
        frame_count = stream.frames or 0
        if not frame_count and duration <= LONG_CLIP_SECONDS:
            # No frame count in the container (Matroska/WebM, raw streams): count packets, which
            # reads the file but decodes nothing, so a short clip costs milliseconds.
            container.seek(0)
            frame_count = sum(1 for packet in container.demux(stream) if packet.size)
            if frame_count > 1 and duration:
                # Matroska reports a guessed nominal rate; the count gives the true average.
                fps = frame_count / duration
        if not fps:
            fps = frame_count / duration if frame_count and duration else 25.0
        if not frame_count:
            frame_count = max(2, int(round(duration * fps)))
        if not duration:
            duration = frame_count / fps

        if max_duration is not None and duration > max_duration:
            raise VideoLimitError(
                f"{path.name} claims to run {_hours(duration)}; the limit is "
                f"{_hours(max_duration)} (setting max_duration_s)")
        _check_frame_size(path, first[0].width, first[0].height, max_pixels)
        rotation = display_rotation(first[0])
        width, height = first[0].width, first[0].height
        sample_aspect = _sample_aspect(stream)
        if sample_aspect != 1.0:
            width = max(2, int(round(width * sample_aspect)))
        if rotation in (90, 270):
            width, height = height, width
        return VideoInfo(path=str(path), width=width, height=height, fps=fps,
                         duration=duration, frame_count=frame_count, rotation=rotation,
                         codec=stream.codec_context.name, container=_container_name(container, path),
                         sample_aspect=sample_aspect)


def _sample_aspect(stream) -> float:
    ratio = stream.codec_context.sample_aspect_ratio or stream.sample_aspect_ratio
    if not ratio or not ratio.numerator or not ratio.denominator:
        return 1.0              # unknown (0:1, or not stored): square, as players take it
    value = float(ratio)
    return 1.0 if abs(value - 1.0) < 1e-3 or not 0.1 < value < 10 else value


def _square(info: VideoInfo) -> tuple[int, int] | None:
    """The size to stretch a decoded frame to (after rotation) when its pixels are not square."""
    return (info.width, info.height) if info.sample_aspect != 1.0 else None


def _hours(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:,.1f} h"


def _targets(info: VideoInfo, count: int) -> list[float]:
    # The last frame starts one average frame duration before the end.
    span = max(info.duration - info.duration / max(info.frame_count, 1), 0.0)
    if count == 1:
        return [span / 2]
    return [span * k / (count - 1) for k in range(count)]


def sample_frames(path, count: int = 32, info: VideoInfo | None = None, *,
                  seek: bool | None = None, stats: DecodeStats | None = None) -> Iterator[Frame]:
    """Yield `count` frames evenly spaced in time over the whole clip, in order, each frame at
    most once (so fewer when the clip is shorter). Only the chosen frames are converted to RGB
    and nothing is kept, so memory does not grow with the clip. Clips longer than
    LONG_CLIP_SECONDS (or any clip with `seek=True`) are read by seeking to each target time;
    their `index` is then estimated from time and frame rate. `stats` counts damaged packets."""
    if count < 1:
        raise ValueError("count must be at least 1")
    path = _checked_path(path)
    info = info or probe(path)
    if seek is None:
        seek = info.duration > LONG_CLIP_SECONDS
    with _open(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        if seek:
            yield from _sample_by_seeking(container, stream, info, _targets(info, count), stats)
        elif count >= info.frame_count:
            yield from _every_frame(container, stream, info, stats)
        else:
            yield from _sample_sequentially(container, stream, info, _targets(info, count),
                                            stats)


def _every_frame(container, stream, info: VideoInfo,
                 stats: DecodeStats | None = None) -> Iterator[Frame]:
    origin = _time_origin(stream)
    for index, time, frame in _timed(_decoded(container, stream, stats), origin, info.fps, stats):
        yield Frame(index, time, display_rgb(frame, display_rotation(frame), _square(info)))


def _sample_sequentially(container, stream, info: VideoInfo, targets: list[float],
                         stats: DecodeStats | None = None) -> Iterator[Frame]:
    origin = _time_origin(stream)
    # Each target takes whichever of the two frames around it is nearer; a frame already given
    # to an earlier target is not given again.
    previous = None             # (index, time, av.VideoFrame)
    last_yielded = -1
    k = 0
    for index, time, frame in _timed(_decoded(container, stream, stats), origin, info.fps, stats):
        while k < len(targets) and targets[k] <= time + 1e-6:
            target = targets[k]
            k += 1
            if (previous is not None and previous[0] > last_yielded
                    and target - previous[1] <= time - target):
                chosen = previous
            elif index > last_yielded:
                chosen = (index, time, frame)
            else:
                continue
            last_yielded = chosen[0]
            yield Frame(chosen[0], chosen[1],
                        display_rgb(chosen[2], display_rotation(chosen[2]), _square(info)))
        if k == len(targets):
            return
        previous = (index, time, frame)
    # Targets past the last decoded frame (the duration overstated, or the tail was damaged).
    if previous is not None and previous[0] > last_yielded:
        yield Frame(previous[0], previous[1],
                    display_rgb(previous[2], display_rotation(previous[2]), _square(info)))


def _sample_by_seeking(container, stream, info: VideoInfo, targets: list[float],
                       stats: DecodeStats | None = None) -> Iterator[Frame]:
    origin = _time_origin(stream)
    half_frame = 0.5 / info.fps
    last_index = -1
    for target in targets:
        container.seek(int((origin + target) / stream.time_base), stream=stream, backward=True)
        chosen = None
        # Seeking lands on the keyframe at or before the target; decode forward to it.
        for frame in _decoded(container, stream, stats):
            chosen = frame
            if frame.time is not None and frame.time - origin >= target - half_frame:
                break
        if chosen is None:
            continue
        time = _frame_time(chosen, origin, 0, info.fps)
        index = int(round(time * info.fps))
        if index <= last_index:
            continue
        last_index = index
        yield Frame(index, time, display_rgb(chosen, display_rotation(chosen), _square(info)))


def display_size(info: VideoInfo, max_long_side: int | None = None) -> tuple[int, int]:
    """(width, height) of the frames `iter_frames` yields: the display size, scaled down (never
    up) so the long side fits `max_long_side`, rounded to even numbers when scaled."""
    width, height = info.width, info.height
    if not max_long_side or max(width, height) <= max_long_side:
        return width, height
    scale = max_long_side / max(width, height)
    return (max(2, int(round(width * scale / 2)) * 2),
            max(2, int(round(height * scale / 2)) * 2))


def iter_frames(path, info: VideoInfo | None = None,
                max_long_side: int | None = None) -> Iterator[Frame]:
    """Yield every decodable frame in order, optionally downscaled (one swscale pass) so its
    long side is at most `max_long_side`."""
    path = _checked_path(path)
    info = info or probe(path)
    size = display_size(info, max_long_side)
    size = None if size == (info.width, info.height) and info.sample_aspect == 1.0 else size
    with _open(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        origin = _time_origin(stream)
        for index, frame in enumerate(_decoded(container, stream)):
            yield Frame(index, _frame_time(frame, origin, index, info.fps),
                        display_rgb(frame, display_rotation(frame), size))


@dataclass
class YuvFrame:
    index: int          # as in Frame
    time: float
    data: np.ndarray    # I420: (H * 3 / 2) x W uint8, Y plane then U then V, display orientation
    colorspace: int     # the source's AVColorSpace and AVColorRange, to tag a re-encode with
    color_range: int


def _turn_i420(data: np.ndarray, width: int, height: int, turns: int) -> np.ndarray:
    """Rotate each plane of an I420 image counter-clockwise by `turns` quarter turns."""
    y = data[:height]
    u = data[height:height + height // 4].reshape(height // 2, width // 2)
    v = data[height + height // 4:].reshape(height // 2, width // 2)
    planes = [np.rot90(plane, k=turns) for plane in (y, u, v)]
    out_width = planes[0].shape[1]
    return np.concatenate([p.ravel() for p in planes]).reshape(-1, out_width)


def iter_yuv420(path, info: VideoInfo | None = None,
                max_long_side: int | None = None) -> Iterator[YuvFrame]:
    """Every frame as I420 in display orientation, sized `display_size(info, max_long_side)`
    rounded down to even numbers. For re-encoding: no RGB conversion of the whole picture."""
    path = _checked_path(path)
    info = info or probe(path)
    width, height = display_size(info, max_long_side)
    width, height = width - width % 2, height - height % 2
    with _open(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        origin = _time_origin(stream)
        for index, frame in enumerate(_decoded(container, stream)):
            rotation = display_rotation(frame)
            time = _frame_time(frame, origin, index, info.fps)
            coded_w, coded_h = (width, height) if rotation in (0, 180) else (height, width)
            if (frame.format.name, frame.width, frame.height) != ("yuv420p", coded_w, coded_h):
                frame = frame.reformat(coded_w, coded_h, format="yuv420p", interpolation="AREA")
            data = frame.to_ndarray()
            if rotation:
                data = _turn_i420(data, coded_w, coded_h, rotation // 90)
            yield YuvFrame(index, time, data, int(frame.colorspace), int(frame.color_range))
