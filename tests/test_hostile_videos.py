"""Hostile and broken videos, generated here: each gets a verdict over what decodes (with a warning
saying what could not be read) or a clear one-line error; limits on pixels per frame and on
duration are settings, named in the error; no temporary file is left."""
from __future__ import annotations

import os

import pytest

from core.cli import main
from core.errors import VideoLimitError
from core.media.video import probe
from core.models.zoo import load_models
from core.pipeline import analyze_video, make_detector
from core.settings import AnalysisSettings
from tests import fixtures

SETTINGS = AnalysisSettings(frames=8)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    return {
        "huge_header": fixtures.make_huge_header_clip(folder / "huge.mp4"),
        "tiny": fixtures.make_tiny_clip(folder / "tiny.mp4"),
        "zero_timestamps": fixtures.make_retimed_clip(folder / "zero.mkv", lambda n: 0),
        "absurd_timestamps": fixtures.make_retimed_clip(folder / "absurd.mkv",
                                                        lambda n: n * 10**12),
        "corrupted": fixtures.make_corrupted_clip(folder / "corrupted.mp4"),
        "many_streams": fixtures.make_many_streams_clip(folder / "streams.mkv"),
        "two_hours": fixtures.make_two_hour_clip(folder / "two_hours.mp4"),
    }


@pytest.fixture(scope="module")
def analyse(tiny_resnet_dir):
    detector = make_detector(SETTINGS)
    classifiers = load_models("all", tiny_resnet_dir)

    def run(path, settings=SETTINGS):
        return analyze_video(path, detector, classifiers, settings, keep_images=False)
    return run


def test_a_header_claiming_huge_frames_is_refused_before_decoding(clips, analyse,
                                                                  private_tempdir):
    with pytest.raises(VideoLimitError) as refused:
        analyse(clips["huge_header"])
    message = str(refused.value)
    assert "16000x16000" in message and "36 megapixels" in message
    assert "max_frame_pixels" in message and len(message.splitlines()) == 1
    # Raised from the header: a decoder never saw the frames (they are not even there).
    assert os.listdir(private_tempdir) == []


def test_the_pixel_limit_is_a_setting(clips, analyse):
    small = AnalysisSettings(frames=8, max_frame_pixels=320 * 200)
    with pytest.raises(VideoLimitError, match=r"320x240 frames.*limit is 0 megapixels"):
        analyse(fixtures.make_face_clip(clips["tiny"].with_name("plain.mp4"), frames=12,
                                        size=(320, 240), face_size=120), small)


def test_a_2x2_video_gets_a_no_face_verdict(clips, analyse):
    result = analyse(clips["tiny"])
    assert (result.video.width, result.video.height) == (2, 2)
    assert result.no_face and result.verdict.label == "NO_FACE"


def test_zero_timestamps_still_give_a_verdict_over_the_frames(clips, analyse):
    result = analyse(clips["zero_timestamps"])
    assert result.faces and result.verdict.probability is not None
    assert len(result.sampled) == SETTINGS.frames
    assert any("out-of-order timestamps" in w for w in result.warnings)


def test_absurd_timestamps_hit_the_duration_limit_with_a_clear_message(clips, analyse):
    with pytest.raises(VideoLimitError, match=r"claims to run [\d,.]+ h; the limit is 4\.0 h "
                                              r"\(setting max_duration_s\)"):
        analyse(clips["absurd_timestamps"])


def test_a_stream_corrupted_halfway_gets_a_verdict_and_says_what_was_unreadable(clips, analyse):
    result = analyse(clips["corrupted"], AnalysisSettings(frames=32))
    assert result.faces and result.verdict.probability is not None
    assert result.warnings and any("could be read" in w or "damaged" in w
                                   for w in result.warnings)
    assert result.to_dict()["warnings"] == result.warnings


def test_many_video_streams_use_the_first(clips, analyse):
    result = analyse(clips["many_streams"])
    assert probe(clips["many_streams"]).width == 160
    assert result.faces and result.verdict.probability is not None


def test_a_two_hour_clip_is_sampled_not_decoded_and_the_duration_limit_is_a_setting(
        clips, analyse):
    result = analyse(clips["two_hours"])
    assert result.video.duration == pytest.approx(7200, rel=0.01)
    assert len(result.sampled) == SETTINGS.frames and result.faces
    with pytest.raises(VideoLimitError, match=r"2\.0 h; the limit is 1\.0 h"):
        analyse(clips["two_hours"], AnalysisSettings(frames=8, max_duration_s=3600))


def test_cli_one_line_error_and_warning(clips, tiny_resnet_dir, tmp_path, capsys):
    code = main(["analyze", str(clips["huge_header"]), "--models-dir", str(tiny_resnet_dir),
                 "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "max_frame_pixels" in err[0]
    assert main(["analyze", str(clips["corrupted"]), "--models-dir", str(tiny_resnet_dir),
                 "--out", str(tmp_path / "out2")]) == 0
    assert "warning:" in capsys.readouterr().err
