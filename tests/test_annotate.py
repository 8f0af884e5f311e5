"""core.media.annotate: boxes drawn with OpenCV and the annotated H.264 MP4 written with PyAV, checked
by decoding what was written."""
import os
import tempfile

import av
import numpy as np
import pytest

from core.errors import NotAVideoError
from core.media.annotate import COLOURS, FaceBox, draw_faces, write_annotated_video
from tests import fixtures

GREEN, RED, AMBER = COLOURS["REAL"], COLOURS["FAKE"], COLOURS["UNCERTAIN"]


def _near(pixel, colour, tolerance=40) -> bool:
    return bool(np.abs(np.asarray(pixel, int) - np.asarray(colour, int)).max() <= tolerance)


def _decode(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return stream, frames


# ---- draw_faces -------------------------------------------------------------------------------

def test_draw_faces_draws_coloured_boxes_with_tags_on_a_copy():
    image = np.full((360, 640, 3), 90, np.uint8)
    faces = [FaceBox((100, 100, 200, 220), "REAL", 0.12, 0),
             FaceBox((300, 100, 400, 220), "FAKE", 0.93, 1),
             FaceBox((480, 100, 580, 220), "UNCERTAIN", 0.5, 2)]
    drawn = draw_faces(image, faces)
    assert (image == 90).all(), "the input must not be modified"
    for face, colour in zip(faces, (GREEN, RED, AMBER)):
        x1, y1, x2, y2 = face.box
        mid_y = int((y1 + y2) / 2)
        assert tuple(drawn[mid_y, int(x1)]) == colour              # left edge
        assert tuple(drawn[mid_y, int(x2)]) == colour              # right edge
        assert tuple(drawn[mid_y, int((x1 + x2) / 2)]) == (90, 90, 90)   # inside untouched
        tag = drawn[int(y1) - 25:int(y1), int(x1):int(x1) + 60]    # tag sits above the box
        assert (tag == colour).all(axis=-1).mean() > 0.4
        text_colour = (0, 0, 0) if face.label == "UNCERTAIN" else (255, 255, 255)
        assert (np.abs(tag.astype(int) - text_colour).max(axis=-1) < 60).any()


def test_tag_goes_inside_a_box_at_the_top_edge_and_boxes_are_clipped():
    image = np.zeros((200, 300, 3), np.uint8)
    drawn = draw_faces(image, [FaceBox((-20, 0, 120, 150), "FAKE", 0.8, 3)])
    assert tuple(drawn[75, 0]) == RED                         # left edge clipped to the frame
    assert (drawn[3:15, 5:60] == RED).all(axis=-1).mean() > 0.4   # tag inside, at the top


def test_line_thickness_follows_image_size():
    def edge_width(height, width):
        image = np.zeros((height, width, 3), np.uint8)
        box = (width * 0.3, height * 0.3, width * 0.6, height * 0.7)
        drawn = draw_faces(image, [FaceBox(box, "REAL", 0.1, 0)])
        row = drawn[int(height * 0.5)]
        return int((row == GREEN).all(axis=-1).sum()) // 2   # two vertical edges cross the row
    assert edge_width(360, 640) < edge_width(1080, 1920) < edge_width(2160, 3840)
    assert edge_width(2160, 3840) >= 2 * edge_width(360, 640)


# ---- write_annotated_video --------------------------------------------------------------------

@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return fixtures.make_face_clip(tmp_path_factory.mktemp("src") / "face.mp4")


def _faces_at(calls, frames=48, size=(640, 360)):
    truth = fixtures.face_positions(frames, size)

    def faces_at(index):
        calls.append(index)
        label, score = ("REAL", 0.1) if index < frames // 2 else ("FAKE", 0.9)
        return [FaceBox(truth[index][0], label, score, 0)]
    return faces_at


def test_annotated_video_is_browser_h264_with_boxes_at_the_faces(tmp_path, source):
    before = set(os.listdir(tempfile.gettempdir()))
    calls = []
    out = tmp_path / "out" / "face.annotated.mp4"
    written = write_annotated_video(source, out, _faces_at(calls))
    assert written["path"] == str(out)
    assert (written["width"], written["height"], written["frames"]) == (640, 360, 48)
    assert written["seconds"] == pytest.approx(2.0, abs=0.01)
    assert calls == list(range(48))

    stream, frames = _decode(out)
    assert stream.codec_context.name == "h264"
    assert stream.codec_context.pix_fmt == "yuv420p"
    assert (stream.width, stream.height) == (640, 360)
    assert stream.average_rate == 24
    assert len(frames) == 48
    data = out.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat"), "faststart: index first, for streaming"

    truth = fixtures.face_positions()
    for index, colour in ((5, GREEN), (40, RED)):
        x1, y1, x2, y2 = (int(round(v)) for v in truth[index][0])
        mid_y, mid_x = (y1 + y2) // 2, (x1 + x2) // 2
        assert _near(frames[index][mid_y, x1], colour), frames[index][mid_y, x1]
        assert _near(frames[index][mid_y, x2], colour)
        assert _near(frames[index][y2, mid_x], colour)
        # The face itself is left as it was.
        inside = frames[index][y1 + 10:y2 - 10, x1 + 10:x2 - 10]
        expected = fixtures.render_frame(index)[y1 + 10:y2 - 10, x1 + 10:x2 - 10]
        assert np.abs(inside.astype(int) - expected).mean() < 8

    assert os.listdir(out.parent) == [out.name]
    assert set(os.listdir(tempfile.gettempdir())) - before == set()


def test_downscaled_annotation_scales_the_boxes(tmp_path, source):
    out = tmp_path / "small.mp4"
    written = write_annotated_video(source, out, _faces_at([]), max_long_side=320)
    assert (written["width"], written["height"]) == (320, 180)
    stream, frames = _decode(out)
    assert (stream.width, stream.height, len(frames)) == (320, 180, 48)
    x1, y1, x2, y2 = (v / 2 for v in fixtures.face_positions()[40][0])
    assert _near(frames[40][int((y1 + y2) / 2), int(round(x1))], RED)


def test_odd_scaled_size_is_made_even(tmp_path, source):
    written = write_annotated_video(source, tmp_path / "odd.mp4", lambda i: [],
                                    max_long_side=333)
    assert written["width"] % 2 == 0 and written["height"] % 2 == 0
    stream, frames = _decode(tmp_path / "odd.mp4")
    assert frames[0].shape == (written["height"], written["width"], 3)


def test_rotated_source_gives_an_upright_annotated_video(tmp_path):
    size = (240, 320)
    src = fixtures.make_face_clip(tmp_path / "phone.mp4", frames=8, size=size, rotation=270,
                                  face_size=110)
    truth = fixtures.face_positions(8, size, face_size=110)
    out = tmp_path / "phone.annotated.mp4"
    write_annotated_video(src, out, lambda i: [FaceBox(truth[i][0], "FAKE", 0.9, 0)])
    stream, frames = _decode(out)
    assert (stream.width, stream.height, len(frames)) == (240, 320, 8)
    x1, y1, x2, y2 = (int(round(v)) for v in truth[3][0])
    assert _near(frames[3][(y1 + y2) // 2, x1], RED)
    inside = frames[3][y1 + 10:y2 - 10, x1 + 10:x2 - 10]
    expected = fixtures.render_frame(3, frames=8, size=size, face_size=110)
    assert np.abs(inside.astype(int) - expected[y1 + 10:y2 - 10, x1 + 10:x2 - 10]).mean() < 8


def test_failure_leaves_no_file_behind(tmp_path, source):
    before = set(os.listdir(tempfile.gettempdir()))

    def faces_at(index):
        if index == 10:
            raise RuntimeError("tracker broke")
        return []

    out = tmp_path / "broken.mp4"
    with pytest.raises(RuntimeError, match="tracker broke"):
        write_annotated_video(source, out, faces_at)
    assert os.listdir(tmp_path) == []

    with pytest.raises(NotAVideoError):
        write_annotated_video(fixtures.make_text_file(tmp_path / "notes.mp4"), out,
                              lambda i: [])
    assert os.listdir(tmp_path) == ["notes.mp4"]
    assert set(os.listdir(tempfile.gettempdir())) - before == set()


@pytest.mark.parametrize("size", [(528, 306), (640, 358), (1080, 1350)])
def test_boxes_are_drawn_on_frames_whose_height_is_not_a_multiple_of_four(tmp_path, size):
    # A 528x306 webcam clip failed here: its chroma planes end in the middle of a buffer row.
    width, height = size
    frames = 6
    src = fixtures.make_face_clip(tmp_path / "clip.mp4", frames=frames, size=size, face_size=120)
    truth = fixtures.face_positions(frames, size)
    out = tmp_path / "annotated.mp4"
    written = write_annotated_video(
        src, out, lambda index: [FaceBox(truth[index][0], "FAKE", 0.9, 0)], max_long_side=0)
    assert (written["width"], written["height"], written["frames"]) == (width, height, frames)
    _, decoded = _decode(out)
    assert len(decoded) == frames
    x1, y1, x2, y2 = (int(round(v)) for v in truth[3][0])
    assert _near(decoded[3][(y1 + y2) // 2, x1], RED), decoded[3][(y1 + y2) // 2, x1]
    assert _near(decoded[3][y2, (x1 + x2) // 2], RED)
