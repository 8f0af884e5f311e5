"""Every frame geometry and pixel format a user's clip may come in, generated here, through the
full analysis with an annotated video: a verdict, an annotated H.264 4:2:0 MP4 with even sides and
the source's frame count, and a box drawn where the face is (after rotation)."""
from __future__ import annotations

from fractions import Fraction

import av
import pytest

from core.faces.tracking import iou
from core.pipeline import analyze_video
from core.settings import AnalysisSettings
from tests import fixtures

FRAMES = 12
SETTINGS = AnalysisSettings(frames=4, views="")

# (display size, stored pixel format, rotation, encoder, container, variable frame rate)
CORPUS = [
    ((528, 306), "yuv420p", 0, "libx264", ".mp4", False),       # a webcam clip: height % 4 == 2
    ((640, 358), "yuv420p", 0, "libx264", ".mp4", False),
    ((333, 251), "yuv444p", 0, "libx264", ".mp4", False),       # odd sides
    ((1080, 1350), "yuv420p", 0, "libx264", ".mp4", False),     # Instagram portrait, downscaled
    ((640, 480), "yuv422p", 0, "libx264", ".mp4", False),
    ((640, 480), "yuv444p", 0, "libx264", ".mp4", False),
    ((640, 480), "yuv420p10le", 0, "libx264", ".mp4", False),   # 10-bit
    ((640, 480), "gray", 0, "libx264", ".mp4", False),
    ((640, 480), "yuva420p", 0, "libvpx-vp9", ".webm", False),  # VP9 with alpha
    ((640, 480), "yuvj420p", 0, "mjpeg", ".avi", False),        # full-range MJPEG
    ((360, 640), "yuv420p", 90, "libx264", ".mp4", False),      # phone portrait clips
    ((640, 360), "yuv420p", 180, "libx264", ".mp4", False),
    ((360, 640), "yuv420p", 270, "libx264", ".mp4", False),
    ((640, 360), "yuv420p", 0, "libx264", ".mp4", True),     # variable frame rate
]
# (... , pixel aspect): all square but one, a PAL 16:9 clip stored 720x576 (pixels 64:45 wide).
CORPUS = [(*entry, None) for entry in CORPUS] + [
    ((1024, 576), "yuv420p", 0, "libx264", ".mp4", False, Fraction(64, 45))]


@pytest.mark.parametrize("size, pix_fmt, rotation, codec, suffix, vfr, sample_aspect", CORPUS,
                         ids=[f"{s[0]}x{s[1]}-{f}-r{r}-{c}" + ("-vfr" if v else "")
                              + (f"-sar{a.numerator}:{a.denominator}" if a else "")
                              for s, f, r, c, _, v, a in CORPUS])
def test_clip_gets_its_verdict_and_an_annotated_video_with_the_box_on_the_face(
        tmp_path, detector, always_fake_models, size, pix_fmt, rotation, codec, suffix, vfr,
        sample_aspect):
    face_size = min(size) // 2
    clip = fixtures.make_face_clip(tmp_path / f"clip{suffix}", frames=FRAMES, size=size,
                                   pix_fmt=pix_fmt, rotation=rotation, codec=codec,
                                   face_size=face_size, vfr=vfr, sample_aspect=sample_aspect)
    annotated = tmp_path / "annotated.mp4"
    result = analyze_video(clip, detector, always_fake_models, SETTINGS, annotated_path=annotated,
                           keep_images=False)
    assert result.warnings == []
    # A face in every sampled frame (in the variable-rate clip, sampled by time, the detector
    # misses the face in one of them).
    assert result.verdict.label == "FAKE" and len(result.sampled) == SETTINGS.frames
    assert len(result.faces) >= len(result.sampled) - (1 if vfr else 0)
    assert result.annotated_video == str(annotated)

    with av.open(str(annotated)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt in ("yuv420p", "yuvj420p")
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    height, width = decoded[0].shape[:2]
    assert width % 2 == 0 and height % 2 == 0
    assert abs(len(decoded) - FRAMES) <= 1
    # Upright, at the display size (downscaled only when over the annotation's long side).
    scale = min(1.0, SETTINGS.annotated_long_side / max(size))
    assert abs(width - size[0] * scale) <= 2 and abs(height - size[1] * scale) <= 2
    # The face was found where it is, and the FAKE box's left edge crosses its middle row: red
    # there in the annotated frame, not in the source.
    face = result.faces[1]
    truth = fixtures.face_positions(FRAMES, size, face_size=face_size)[face.frame_index][0]
    assert iou(face.box, truth) > 0.5, (face.box, truth)
    x1, y1, x2, y2 = (v * scale for v in face.box)
    row = decoded[face.frame_index][int((y1 + y2) / 2)]
    left = row[max(0, int(x1) - 3):int(x1) + 4].astype(int)
    assert (left[:, 0] - left[:, 1:].max(axis=1)).max() > 100, left
    source = fixtures.render_frame(face.frame_index, frames=FRAMES, size=size,
                                   face_size=face_size)
    source_left = source[int((y1 + y2) / 2 / scale)][
        max(0, int(x1 / scale) - 3):int(x1 / scale) + 4].astype(int)
    assert (source_left[:, 0] - source_left[:, 1:].max(axis=1)).max() < 100


def test_the_cli_annotates_a_webcam_sized_clip_and_counts_it_analysed(tmp_path, always_fake_dir,
                                                                     capsys):
    import json

    from core.cli import main

    clip = fixtures.make_face_clip(tmp_path / "webcam.mp4", frames=FRAMES, size=(528, 306),
                                   face_size=150)
    out = tmp_path / "out"
    assert main(["analyze", str(clip), "--models-dir", str(always_fake_dir), "--frames", "4",
                 "--annotate", "--out", str(out)]) == 0
    report = json.loads((out / "webcam.json").read_text())
    assert report["verdict"]["label"] in ("FAKE", "UNCERTAIN") and report["warnings"] == []
    with av.open(report["annotated_video"]) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (528, 306)
        assert sum(1 for _ in container.decode(stream)) == FRAMES
    assert "failed" not in capsys.readouterr().out


@pytest.mark.parametrize("size, pix_fmt, rotation", [((528, 306), "yuv420p", 0),
                                                      ((333, 251), "yuv444p", 0),
                                                      ((360, 640), "yuv420p", 90)])
def test_the_app_shows_the_verdict_and_the_annotated_video(tmp_path, tiny_resnet_dir, monkeypatch,
                                                          size, pix_fmt, rotation):
    import io

    from tests.test_app import current, new_app, upload

    monkeypatch.setenv("DEEPFAKE_MODELS_DIR", str(tiny_resnet_dir))
    clip = fixtures.make_face_clip(tmp_path / "clip.mp4", frames=FRAMES, size=size,
                                   pix_fmt=pix_fmt, rotation=rotation, face_size=min(size) // 2)
    at = upload(new_app(frames=4), clip)
    entry = current(at)
    assert entry.result.verdict.label in ("REAL", "FAKE", "UNCERTAIN")
    assert len(entry.result.faces) == len(entry.result.sampled) >= 4
    assert entry.result.warnings == []
    assert len(at.get("video")) == 1
    with av.open(io.BytesIO(entry.annotated_mp4)) as container:
        stream = container.streams.video[0]
        upright = (stream.width, stream.height)
        assert sum(1 for _ in container.decode(stream)) == FRAMES
    assert upright == (size[0] - size[0] % 2, size[1] - size[1] % 2)
