"""core.media.video on real files written with PyAV: bad inputs, probing, sampling, rotation, codecs,
variable frame rate, seeking and every-frame iteration."""
import json

import av
import cv2
import numpy as np
import pytest

import core.media.video as video
from core.errors import (CorruptVideoError, EmptyFileError, NotAVideoError, NoVideoStreamError,
                         TooFewFramesError, VideoError)
from core.media.video import iter_frames, probe, sample_frames
from tests import fixtures


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _can_encode(codec: str) -> bool:
    try:
        av.codec.Codec(codec, "w")
        return True
    except Exception:
        return False


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return fixtures.make_face_clip(tmp_path_factory.mktemp("clip") / "face.mp4")


# ---- bad input --------------------------------------------------------------------------------

BAD_INPUTS = [
    ("empty.mp4", fixtures.make_empty_file, EmptyFileError, "empty"),
    ("notes.mp4", fixtures.make_text_file, NotAVideoError, "not a video"),
    ("cut.mp4", fixtures.make_truncated_mp4, CorruptVideoError, "moov atom"),
    ("song.m4a", fixtures.make_audio_only, NoVideoStreamError, "no video stream"),
    ("song.mkv", fixtures.make_audio_only, NoVideoStreamError, "only audio"),
    ("still.mp4", fixtures.make_one_frame_clip, TooFewFramesError, "at least 2 frames"),
]


@pytest.mark.parametrize("name, make, error, words", BAD_INPUTS,
                         ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_raises_its_typed_error_with_a_one_line_message(tmp_path, name, make, error,
                                                                   words):
    path = make(tmp_path / name)
    for read in (probe, lambda p: list(sample_frames(p, 4)), lambda p: next(iter_frames(p))):
        with pytest.raises(error) as caught:
            read(path)
        message = str(caught.value)
        assert words in message
        assert name in message
        assert "\n" not in message


def test_missing_path_and_folder_are_not_videos(tmp_path):
    with pytest.raises(NotAVideoError, match="No such file"):
        probe(tmp_path / "nowhere.mp4")
    with pytest.raises(NotAVideoError, match="folder"):
        probe(tmp_path)


def test_every_video_error_shares_the_base_class():
    for error in (EmptyFileError, NotAVideoError, NoVideoStreamError, CorruptVideoError,
                  TooFewFramesError):
        assert issubclass(error, VideoError)


def test_truncated_mp4_with_index_gives_the_frames_that_decode(tmp_path):
    path = fixtures.make_truncated_mp4(tmp_path / "cut.mp4", faststart=True)
    info = probe(path)
    assert info.frame_count == 48        # what the surviving index promises
    frames = list(sample_frames(path, 8, info))
    indices = [f.index for f in frames]
    assert 2 <= len(frames) < 8
    assert indices == sorted(set(indices))
    everything = list(iter_frames(path, info))
    assert 2 <= len(everything) < 48
    truth = fixtures.render_frame(everything[-1].index, size=(320, 240), face_size=120)
    assert _diff(everything[-1].image, truth) < 8


# ---- probe and sampling -----------------------------------------------------------------------

def test_probe_reports_the_clip(clip):
    info = probe(clip)
    assert (info.width, info.height) == (640, 360)
    assert info.fps == pytest.approx(24)
    assert info.duration == pytest.approx(2.0, abs=0.05)
    assert info.frame_count == 48
    assert info.rotation == 0
    assert (info.codec, info.container) == ("h264", "mp4")
    assert json.loads(json.dumps(info.to_dict()))["frame_count"] == 48


def test_sample_frames_are_evenly_spaced_over_the_whole_clip(clip):
    frames = list(sample_frames(clip, 8))
    assert [f.index for f in frames] == [int(round(i)) for i in np.linspace(0, 47, 8)]
    for frame in frames:
        assert frame.time == pytest.approx(frame.index / 24, abs=0.002)
        assert frame.image.shape == (360, 640, 3) and frame.image.dtype == np.uint8
        assert _diff(frame.image, fixtures.render_frame(frame.index)) < 6


def test_sample_frames_gives_each_frame_once_when_asked_for_more(clip):
    frames = list(sample_frames(clip, 100))
    assert [f.index for f in frames] == list(range(48))


def test_sample_of_one_is_the_middle_frame(clip):
    (frame,) = list(sample_frames(clip, 1))
    assert abs(frame.index - 23.5) <= 1


def test_sample_frames_rejects_a_count_below_one(clip):
    with pytest.raises(ValueError):
        list(sample_frames(clip, 0))


# ---- rotation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_metadata_is_honoured(tmp_path, rotation):
    size = (240, 320)   # display size: portrait
    path = fixtures.make_face_clip(tmp_path / "phone.mp4", frames=12, size=size,
                                   rotation=rotation, face_size=110)
    with av.open(str(path)) as container:
        stored = next(container.decode(video=0)).to_ndarray(format="rgb24")
    upright = fixtures.render_frame(0, frames=12, size=size, face_size=110)
    # The file really stores the picture turned: a reader ignoring metadata gets it wrong.
    assert _diff(stored, np.rot90(upright, k=-rotation // 90)) < 6

    info = probe(path)
    assert info.rotation == rotation
    assert (info.width, info.height) == size
    frames = list(sample_frames(path, 3, info))
    for frame in frames:
        assert frame.image.shape == (320, 240, 3)
        assert _diff(frame.image, fixtures.render_frame(frame.index, frames=12, size=size,
                                                        face_size=110)) < 6
    (first,) = [f for f in iter_frames(path, info) if f.index == 0]
    assert _diff(first.image, upright) < 6


# ---- codecs and containers --------------------------------------------------------------------

FORMATS = [
    (".mp4", "libx264", "h264"),
    (".mov", "libx264", "h264"),
    (".mkv", "libx264", "h264"),
    (".mp4", "libx265", "hevc"),
    (".mkv", "libx265", "hevc"),
    (".webm", "libvpx", "vp8"),
    (".webm", "libvpx-vp9", "vp9"),
    (".avi", "mpeg4", "mpeg4"),
    (".mkv", "mpeg4", "mpeg4"),
]


@pytest.mark.parametrize("suffix, encoder, codec", FORMATS,
                         ids=[f"{s[1:]}-{e}" for s, e, _ in FORMATS])
def test_codec_and_container_round_trip(tmp_path, suffix, encoder, codec):
    if not _can_encode(encoder):
        pytest.skip(f"this PyAV build has no {encoder} encoder")
    kwargs = dict(frames=24, size=(320, 240), face_size=120)
    path = fixtures.make_face_clip(tmp_path / f"clip{suffix}", codec=encoder, **kwargs)
    info = probe(path)
    assert info.codec == codec
    assert (info.width, info.height) == (320, 240)
    assert info.frame_count == 24
    assert info.fps == pytest.approx(24, rel=0.01)
    assert info.duration == pytest.approx(1.0, abs=0.05)
    frames = list(sample_frames(path, 6, info))
    assert [f.index for f in frames] == [int(round(i)) for i in np.linspace(0, 23, 6)]
    for frame in frames:
        assert _diff(frame.image, fixtures.render_frame(frame.index, **kwargs)) < 8


# ---- variable frame rate ----------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_variable_frame_rate_is_sampled_by_time(tmp_path, suffix):
    path = fixtures.make_face_clip(tmp_path / f"vfr{suffix}", vfr=True)
    true_times = fixtures.frame_times(48, 24, vfr=True)
    info = probe(path)
    assert info.frame_count == 48
    # The last frame's own duration is the muxer's guess, anything up to one slow interval.
    assert true_times[-1] < info.duration <= true_times[-1] + 2 / 24 + 0.01
    frames = list(sample_frames(path, 8, info))
    assert len(frames) == 8
    times = np.array([f.time for f in frames])
    for frame in frames:
        assert frame.time == pytest.approx(true_times[frame.index], abs=0.002)
    # Evenly spaced in time, to within one of the long (2/fps) frame intervals ...
    ideal = np.linspace(times[0], times[-1], 8)
    assert np.abs(times - ideal).max() <= 2 / 24 + 1e-3
    # ... which is not evenly spaced in frames: the slow second half holds 80% of the time.
    assert sum(f.index >= 24 for f in frames) >= 5
    assert [f.index for f in frames] != [int(round(i)) for i in np.linspace(0, 47, 8)]


# ---- seeking for long clips -------------------------------------------------------------------

def test_seeking_picks_the_same_frames_as_decoding_everything(tmp_path, monkeypatch):
    kwargs = dict(frames=96, size=(320, 240), face_size=120)
    path = fixtures.make_face_clip(tmp_path / "long.mp4", keyint=12, **kwargs)
    info = probe(path)
    decoded = list(sample_frames(path, 7, info, seek=False))

    seeks = []
    real_seek = video._sample_by_seeking
    monkeypatch.setattr(video, "_sample_by_seeking",
                        lambda *a: seeks.append(1) or real_seek(*a))
    monkeypatch.setattr(video, "LONG_CLIP_SECONDS", 1.0)   # this 4 s clip now counts as long
    sought = list(sample_frames(path, 7, info))
    assert seeks, "a clip past LONG_CLIP_SECONDS must be read by seeking"
    assert [f.index for f in sought] == [f.index for f in decoded]
    for a, b in zip(sought, decoded):
        assert a.time == pytest.approx(b.time, abs=1e-3)
        assert _diff(a.image, b.image) < 1
        assert _diff(a.image, fixtures.render_frame(a.index, **kwargs)) < 8


# ---- every frame ------------------------------------------------------------------------------

def test_iter_frames_yields_every_frame_in_order(clip):
    frames = list(iter_frames(clip))
    assert [f.index for f in frames] == list(range(48))
    assert frames[10].time == pytest.approx(10 / 24, abs=0.002)
    assert _diff(frames[30].image, fixtures.render_frame(30)) < 6


def test_iter_frames_downscales_to_the_long_side(tmp_path, clip):
    small = list(iter_frames(clip, max_long_side=320))
    assert len(small) == 48
    assert small[0].image.shape == (180, 320, 3)
    expected = cv2.resize(fixtures.render_frame(20), (320, 180), interpolation=cv2.INTER_AREA)
    assert _diff(small[20].image, expected) < 6
    # Never upscaled.
    assert next(iter_frames(clip, max_long_side=4000)).image.shape == (360, 640, 3)

    portrait = fixtures.make_face_clip(tmp_path / "phone.mov", frames=6, size=(240, 320),
                                       rotation=90, face_size=110)
    assert next(iter_frames(portrait, max_long_side=160)).image.shape == (160, 120, 3)


# ---- the fixtures themselves ------------------------------------------------------------------

def test_two_faces_stay_apart_and_move_in_opposite_directions():
    boxes = fixtures.face_positions(48, (640, 360), faces=2)
    for left, right in boxes:
        assert left[2] < right[0]                      # never overlap
    assert boxes[-1][0][1] > boxes[0][0][1]            # left face moves down
    assert boxes[-1][1][1] < boxes[0][1][1]            # right face moves up


def test_face_positions_match_what_mtcnn_finds():
    from mtcnn import MTCNN
    image = fixtures.render_frame(10)
    (truth,) = fixtures.face_positions()[10]
    found = [d for d in MTCNN().detect_faces(image) if d["confidence"] > 0.9]
    assert len(found) == 1
    x, y, w, h = found[0]["box"]
    ix = max(0, min(truth[2], x + w) - max(truth[0], x))
    iy = max(0, min(truth[3], y + h) - max(truth[1], y))
    union = w * h + (truth[2] - truth[0]) * (truth[3] - truth[1]) - ix * iy
    assert ix * iy / union > 0.75


def test_y4m_is_a_valid_420_stream(tmp_path):
    path = fixtures.write_y4m(tmp_path / "webcam.y4m", 5, size=(320, 240), fps=15)
    data = path.read_bytes()
    header = data.split(b"\n", 1)[0].decode()
    assert header.startswith("YUV4MPEG2 W320 H240 F15:1")
    assert len(data) == len(header) + 1 + 5 * (len(b"FRAME\n") + 320 * 240 * 3 // 2)
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 5
    assert _diff(decoded[2], fixtures.render_frame(2, frames=5, size=(320, 240),
                                                   face_size=120)) < 6
