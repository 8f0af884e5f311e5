"""Face extraction for training, on generated clips: real PyAV decoding, real MTCNN, real tracking,
worker processes included."""
import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from core import cli
from core.training.extract import (INDEX_COLUMNS, ExtractSettings, crop_face, crop_geometry,
                          read_index, select_faces, video_id)
from core.faces.detector import Detection
from core.faces.tracking import Track, iou
from tests.fixtures import face_positions, make_face_clip, make_text_file

FRAMES = 12
ONE = dict(frames=FRAMES, size=(320, 240), face_size=100)
TWO = dict(frames=FRAMES, size=(480, 240), face_size=100, faces=2)


def write_labels(folder: Path) -> Path:
    """Two clips both named clip.mp4 (in different folders), a two-person clip, a fake, and a
    file that is not a video; with split, group and dataset columns."""
    (folder / "a").mkdir()
    (folder / "b").mkdir()
    make_face_clip(folder / "a" / "clip.mp4", **ONE)
    make_face_clip(folder / "b" / "clip.mp4", **ONE)
    make_face_clip(folder / "b" / "pair.mp4", **TWO)
    make_face_clip(folder / "fake.mp4", **ONE)
    make_text_file(folder / "notes.mp4")
    rows = [("a/clip.mp4", "REAL", "train", "g1"), ("fake.mp4", "FAKE", "train", "g1"),
            ("b/clip.mp4", "REAL", "val", "g2"), ("b/pair.mp4", "FAKE", "val", "g3"),
            ("notes.mp4", "REAL", "train", "g4")]
    labels = folder / "labels.csv"
    with labels.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split", "group", "dataset"])
        writer.writerows([(*row, "synthetic") for row in rows])
    return labels


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("labelled")
    labels = write_labels(folder)
    out = tmp_path_factory.mktemp("faces")
    code = cli.main(["extract", str(labels), "--out", str(out), "--real-faces", "4",
                     "--fake-faces", "3", "--frames", "6", "--crop-size", "128", "--workers", "2"])
    return labels, out, code


def rows_by_video(labels: Path, out: Path) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for row in read_index(out):
        grouped.setdefault(Path(row["video"]).relative_to(labels.parent).as_posix(), []).append(row)
    return grouped


def test_every_readable_video_gives_its_share_of_faces(extracted):
    labels, out, code = extracted
    assert code == 0
    grouped = rows_by_video(labels, out)
    assert set(grouped) == {"a/clip.mp4", "b/clip.mp4", "b/pair.mp4", "fake.mp4"}
    assert len(grouped["a/clip.mp4"]) == 4 and len(grouped["b/clip.mp4"]) == 4   # real: 4
    assert len(grouped["fake.mp4"]) == 3                                          # fake: 3
    # The two-person fake: both persons, three faces in all.
    pair = grouped["b/pair.mp4"]
    assert len(pair) == 3 and {r["person"] for r in pair} == {0, 1}
    # Faces spread over the clip: first and last sampled frames both used for one-person clips.
    frames = sorted(r["frame"] for r in grouped["a/clip.mp4"])
    assert frames[0] == 0 and frames[-1] == FRAMES - 1


def test_index_rows_describe_the_crops(extracted):
    _, out, _ = extracted
    with (out / "index.csv").open() as handle:
        assert csv.DictReader(handle).fieldnames == INDEX_COLUMNS
    truth = face_positions(**ONE)
    for row in read_index(out):
        image = cv2.imread(row["file"])
        assert image.shape == (128, 128, 3) and row["crop_size"] == 128
        assert Path(row["file"]).suffix == ".png"
        assert row["label"] == (1 if "fake" in row["video"] or "pair" in row["video"] else 0)
        assert row["dataset"] == "synthetic" and row["group"] in {"g1", "g2", "g3"}
        assert row["split"] == ("train" if row["group"] == "g1" else "val")
        assert row["confidence"] >= 0.95 and row["margin"] == 0.2
        if "pair" not in row["video"]:
            assert iou((row["x1"], row["y1"], row["x2"], row["y2"]), truth[row["frame"]][0]) > 0.6
        # Keypoints in crop pixels: eyes left and right of the centre, mouth below the eyes.
        assert 0 < row["left_eye_x"] < 64 < row["right_eye_x"] < 128
        assert row["left_eye_y"] < row["mouth_left_y"] < 128


def test_same_file_names_get_different_ids_and_folders(extracted):
    _, out, _ = extracted
    ids = {row["video_id"] for row in read_index(out) if row["video"].endswith("clip.mp4")}
    assert len(ids) == 2
    assert all((out / "faces" / vid).is_dir() and (out / "parts" / f"{vid}.csv").is_file()
               for vid in ids)


def test_unreadable_video_is_listed_not_fatal(extracted):
    _, out, _ = extracted
    with (out / "failed.csv").open() as handle:
        failed = list(csv.DictReader(handle))
    assert [Path(r["video"]).name for r in failed] == ["notes.mp4"]
    assert "not a video" in failed[0]["error"].lower() or "notes.mp4" in failed[0]["error"]
    assert json.loads((out / "extract.json").read_text())["fake_faces"] == 3


def test_second_run_does_no_work_and_touches_nothing(extracted, capsys):
    labels, out, _ = extracted
    files = [p for p in out.rglob("*") if p.is_file()]
    before = {p: p.stat().st_mtime_ns for p in files}
    capsys.readouterr()
    code = cli.main(["extract", str(labels), "--out", str(out), "--real-faces", "4",
                     "--fake-faces", "3", "--frames", "6", "--crop-size", "128"])
    assert code == 0
    assert "0 extracted now, 5 done before" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_other_settings_on_the_same_folder_are_refused(extracted, capsys):
    labels, out, _ = extracted
    code = cli.main(["extract", str(labels), "--out", str(out), "--real-faces", "8",
                     "--fake-faces", "3", "--frames", "6", "--crop-size", "128"])
    assert code == 2
    assert "real_faces" in capsys.readouterr().err


def test_select_faces_shares_out_over_persons_and_time():
    def track(track_id, frames):
        return Track(track_id, {f: Detection((0, 0, 10, 10), 0.99, {}) for f in frames})

    chosen = select_faces([track(0, range(0, 100, 10)), track(1, [40, 50])], 5)
    by_person = {p: [f for q, f, _ in chosen if q == p] for p in (0, 1)}
    assert by_person[1] == [40, 50]                 # the short track gives all it has
    assert by_person[0] == [0, 40, 90]              # the rest spread over the long one
    assert len(select_faces([track(0, [1, 2])], 10)) == 2
    assert select_faces([], 3) == []


def test_native_crop_size_is_capped():
    image = np.zeros((1200, 1200, 3), np.uint8)
    kp = {"left_eye": (500.0, 500.0), "right_eye": (700.0, 500.0), "nose": (600.0, 600.0),
          "mouth_left": (520.0, 700.0), "mouth_right": (680.0, 700.0)}
    small = Detection((560, 560, 640, 660), 0.99, kp)         # 100 px tall -> 140 px square
    crop, _ = crop_face(image, small, margin=0.2, crop_size=0)
    assert crop.shape == (140, 140, 3)
    big = Detection((300, 300, 900, 900), 0.99, kp)           # 840 px square -> capped at 384
    crop, keypoints = crop_face(image, big, margin=0.2, crop_size=0)
    assert crop.shape == (384, 384, 3)
    left, top, side = crop_geometry(big.box, 0.2)
    assert (left, top, side) == (180, 180, 840)
    x, y = keypoints["nose"]
    assert abs(x - (600 - 180) * 384 / 840) < 1 and abs(y - (600 - 180) * 384 / 840) < 1


def test_video_ids_are_stable_and_safe(tmp_path):
    a = video_id(tmp_path / "x" / "my clip (1).mp4", tmp_path)
    assert a == video_id(tmp_path / "x" / "my clip (1).mp4", tmp_path)
    assert a != video_id(tmp_path / "y" / "my clip (1).mp4", tmp_path)
    assert a.startswith("my_clip_1_-") and "/" not in a and " " not in a


def test_settings_are_checked():
    with pytest.raises(ValueError):
        ExtractSettings(real_faces=0)
    assert ExtractSettings().frames_for(1) == 16 and ExtractSettings(frames=5).frames_for(0) == 5
