"""Photos: every format and orientation a person's picture may come in, generated here, through
the same detector, models and verdict as a video's frames; the CLI, the archive scan and the app
take them; a bad picture gets one line and nothing else."""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from core.errors import ImageError, ImageLimitError
from core.faces.tracking import iou
from core.media.image import MIN_IMAGE_SIDE, is_image_file, read_image
from core.pipeline import analyze_file, analyze_image
from core.settings import AnalysisSettings
from tests import fixtures

SETTINGS = AnalysisSettings(views="")
SIZE = (640, 480)


def red_edge(image: np.ndarray, box, scale: float = 1.0) -> int:
    """How much redder than green and blue the box's left edge is at the box's middle row."""
    x1, y1, _, y2 = (v * scale for v in box)
    row = image[int((y1 + y2) / 2)]
    edge = row[max(0, int(x1) - 3):int(x1) + 4].astype(int)
    return int((edge[:, 0] - edge[:, 1:].max(axis=1)).max())


# (file name, Pillow mode, save options, how close the pixels must stay to the picture)
FORMATS = [
    ("photo.jpg", "RGB", {"quality": 90}, 12),
    ("photo.png", "RGB", {}, 0),
    ("photo.webp", "RGB", {"quality": 90}, 12),
    ("photo.bmp", "RGB", {}, 0),
    ("grey.png", "L", {}, 40),
    ("transparent.png", "RGBA", {}, 0),
    ("palette.png", "P", {}, 40),
    ("print.jpg", "CMYK", {"quality": 90}, 40),
    ("sixteen_bit.png", "I;16", {}, 40),
]


@pytest.mark.parametrize("name, mode, options, tolerance", FORMATS, ids=[f[0] for f in FORMATS])
def test_each_format_is_read_upright_and_its_face_judged(tmp_path, detector, always_fake_models,
                                                         name, mode, options, tolerance):
    path = fixtures.make_face_photo(tmp_path / name, mode=mode, **options)
    assert is_image_file(path)
    pixels, info, notes = read_image(path)
    assert pixels.shape == (SIZE[1], SIZE[0], 3) and pixels.dtype == np.uint8 and notes == []
    assert (info.kind, info.width, info.height, info.frame_count) == ("image", *SIZE, 1)
    picture = fixtures.render_photo(SIZE).astype(int)
    if mode in ("L", "I;16"):       # grey: compare brightness
        picture = picture.mean(axis=2, keepdims=True)
    assert np.abs(pixels.astype(int) - picture).mean() <= tolerance + 1

    result = analyze_image(path, detector, always_fake_models, SETTINGS, keep_images=False)
    [face] = result.faces
    assert iou(face.box, fixtures.photo_face_box(SIZE)) > 0.6, face.box
    assert result.verdict.label == "FAKE" and result.kind == "image"


def test_a_photos_face_is_seen_every_way_even_where_a_clips_faces_take_turns(
        tmp_path, detector, always_fake_models):
    path = fixtures.make_face_photo(tmp_path / "face.jpg")
    for per_face in ("all", "one"):
        settings = AnalysisSettings(views="flip,jpeg", views_per_face=per_face)
        [face] = analyze_image(path, detector, always_fake_models, settings,
                               keep_images=False).faces
        assert all(set(views) == {"original", "flip", "jpeg"} for views in face.views.values())


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_honoured_and_the_box_drawn_on_the_face(
        tmp_path, detector, always_fake_models, orientation):
    path = fixtures.make_face_photo(tmp_path / "phone.jpg", orientation=orientation, quality=95)
    annotated = tmp_path / "phone.annotated.jpg"
    result = analyze_image(path, detector, always_fake_models, SETTINGS, annotated_path=annotated)
    assert (result.video.width, result.video.height) == SIZE   # upright whatever was stored
    [face] = result.faces
    truth = fixtures.photo_face_box(SIZE)
    assert iou(face.box, truth) > 0.6, (orientation, face.box)
    assert result.annotated_image == str(annotated)
    drawn = np.asarray(Image.open(annotated).convert("RGB"))
    assert drawn.shape == (SIZE[1], SIZE[0], 3)
    assert red_edge(drawn, face.box) > 100
    assert red_edge(fixtures.render_photo(SIZE), face.box) < 100
    # The gallery still shows the same upright picture with its box.
    [still] = result.stills.values()
    assert still.shape == drawn.shape and red_edge(still, face.box) > 100


def test_a_large_photo_is_searched_finely_and_annotated_at_the_settings_long_side(
        tmp_path, detector, always_fake_models):
    # A 3000 x 2000 photo with a face about 100 px wide: 21 px at the clips' detection size of
    # 640 px, below the smallest face looked for there, but found in a photo.
    size = (3000, 2000)
    path = fixtures.make_face_photo(tmp_path / "group.jpg", size=size, face_size=190,
                                    corner=(2200, 1500), quality=92)
    annotated = tmp_path / "group.annotated.jpg"
    result = analyze_image(path, detector, always_fake_models, SETTINGS, annotated_path=annotated)
    [face] = result.faces
    assert iou(face.box, fixtures.photo_face_box(size, 190, (2200, 1500))) > 0.6
    drawn = np.asarray(Image.open(annotated).convert("RGB"))
    scale = SETTINGS.annotated_long_side / max(size)
    assert drawn.shape[1] == SETTINGS.annotated_long_side
    assert red_edge(drawn, face.box, scale) > 100


def test_an_animated_webp_is_judged_on_its_first_frame_and_says_so(tmp_path, detector,
                                                                   always_fake_models):
    first = Image.fromarray(fixtures.render_photo(SIZE))
    path = tmp_path / "animated.webp"
    first.save(path, save_all=True, append_images=[first.rotate(90), first.rotate(180)],
               duration=100)
    result = analyze_image(path, detector, always_fake_models, SETTINGS, keep_images=False)
    assert len(result.faces) == 1
    assert result.warnings == ["an animated WebP of 3 frames: only its first frame was judged"]


def test_a_photo_without_a_face_gets_no_face_not_an_error(tmp_path, detector, always_fake_models):
    path = tmp_path / "wall.png"
    Image.fromarray(fixtures._background(*SIZE)).save(path)
    result = analyze_image(path, detector, always_fake_models, SETTINGS)
    assert result.no_face and result.verdict.label == "NO_FACE"
    assert result.verdict.probability is None


def bad_photos(folder):
    """(file, what its one-line message must say) for each way a picture can be unusable."""
    return [
        (fixtures.make_truncated_jpeg(folder / "cut.jpg"), "truncated"),
        (fixtures.make_face_photo(folder / "dot.png", size=(1, 1), face_size=1, corner=(0, 0)),
         f"1x1 px; a photo needs at least {MIN_IMAGE_SIDE} px"),
        (fixtures.make_text_file(folder / "notes.jpg"), "not a photo"),
        (fixtures.make_png_header(folder / "bomb.png", 100_000, 100_000),
         "claims 10000 megapixels; the limit is 50 megapixels (setting max_image_pixels)"),
        (fixtures.make_png_header(folder / "huge.png", 9000, 7000),
         "is 9000x7000 (63 megapixels); the limit is 50 megapixels (setting max_image_pixels)"),
    ]


def test_bad_photos_raise_one_line_that_names_the_file(tmp_path, detector, always_fake_models):
    for path, says in bad_photos(tmp_path):
        with pytest.raises(ImageError) as raised:
            analyze_file(path, detector, always_fake_models, SETTINGS)
        message = str(raised.value)
        assert message.startswith(path.name + " ") and says in message, message
        assert len(message.splitlines()) == 1
        if path.name in ("bomb.png", "huge.png"):
            assert isinstance(raised.value, ImageLimitError)


def test_the_pixel_limit_is_a_setting(tmp_path, detector, always_fake_models):
    path = fixtures.make_face_photo(tmp_path / "photo.png")
    with pytest.raises(ImageLimitError, match="the limit is 0.10 megapixels"):
        analyze_file(path, detector, always_fake_models, AnalysisSettings(max_image_pixels=100_000))


def test_a_video_named_jpg_is_still_a_video_and_a_photo_named_mp4_still_a_photo(tmp_path):
    clip = fixtures.make_face_clip(tmp_path / "clip.mp4", frames=4, size=(160, 120),
                                   face_size=80)
    renamed = tmp_path / "clip.jpg"
    clip.rename(renamed)
    assert not is_image_file(renamed)
    photo = fixtures.make_face_photo(tmp_path / "photo.jpg")
    assert is_image_file(photo.rename(tmp_path / "photo.mp4"))


def test_the_cli_scans_a_folder_of_photos_and_videos_in_one_report_schema(
        tmp_path, always_fake_dir, capfd):
    from core.cli import main

    folder = tmp_path / "archive"
    folder.mkdir()
    fixtures.make_face_photo(folder / "portrait.jpg", orientation=6)
    fixtures.make_face_photo(folder / "portrait.png")        # the same stem as the JPEG
    fixtures.make_face_clip(folder / "clip.mp4", frames=8, size=(320, 240), face_size=120)
    bad = bad_photos(folder)
    out = tmp_path / "out"
    code = main(["analyze", str(folder), "--models-dir", str(always_fake_dir), "--frames", "4",
                 "--annotate", "--out", str(out)])
    printed = capfd.readouterr()
    assert code == 2                                 # some inputs failed
    assert "Traceback" not in printed.out + printed.err
    errors = [line for line in printed.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(bad)
    for path, says in bad:
        [line] = [e for e in errors if f"/{path.name}: " in e]
        assert says in line

    for stem in ("archive_portrait_jpg", "archive_portrait_png"):
        report = json.loads((out / f"{stem}.json").read_text())
        assert report["kind"] == "image" and report["video"]["kind"] == "image"
        assert report["verdict"]["label"] == "FAKE" and len(report["faces"]) == 1
        drawn = np.asarray(Image.open(report["annotated_image"]).convert("RGB"))
        assert red_edge(drawn, report["faces"][0]["box"]) > 100
        [row] = list(csv.DictReader(io.StringIO((out / f"{stem}.csv").read_text())))
        assert row["kind"] == "image" and row["video"].startswith("portrait.")
    assert json.loads((out / "archive_portrait_jpg.json").read_text())["video"]["rotation"] == 270
    clip_report = json.loads((out / "clip.json").read_text())
    assert clip_report["kind"] == "video" and (out / "clip.annotated.mp4").is_file()
    summary = list(csv.DictReader(io.StringIO((out / "summary.csv").read_text())))
    kinds = {row["path"].rsplit("/", 1)[-1]: (row["kind"], row["verdict"]) for row in summary}
    assert kinds["portrait.jpg"] == ("image", "FAKE") and kinds["clip.mp4"] == ("video", "FAKE")
    assert kinds["notes.jpg"] == ("image", "ERROR")

    # A rerun keeps what is done (annotated copies included) and redoes only the failures.
    assert main(["analyze", str(folder), "--models-dir", str(always_fake_dir), "--frames", "4",
                 "--annotate", "--out", str(out)]) == 2
    assert "3 already done, kept" in capfd.readouterr().out


@pytest.fixture
def app(tiny_resnet_dir, monkeypatch):
    from tests.test_app import new_app

    monkeypatch.setenv("DEEPFAKE_MODELS_DIR", str(tiny_resnet_dir))
    return new_app()


def test_the_app_shows_a_photos_verdict_annotated_image_gallery_and_compare(tmp_path, app):
    from tests.test_app import card_markdown, current, upload, upload_dirs

    path = fixtures.make_face_photo(tmp_path / "profile.jpg", orientation=8)
    before = upload_dirs()
    upload(app, path)
    assert upload_dirs() == before and not app.error
    entry = current(app)
    assert entry.result.kind == "image" and entry.annotated_mp4 is None
    [face] = entry.result.faces
    assert iou(face.box, fixtures.photo_face_box(SIZE)) > 0.6
    drawn = np.asarray(Image.open(io.BytesIO(entry.annotated_jpeg)).convert("RGB"))
    assert drawn.shape == (SIZE[1], SIZE[0], 3)
    [card] = card_markdown(app)
    assert "1 person" in card and "1 face" in card
    assert len(app.get("image")) == 1 and not app.get("video")
    assert len(app.get("plotly_chart")) == 1
    downloads = [b.proto.label for b in app.get("download_button")]
    assert downloads == ["Annotated photo (JPEG)", "Report (JSON)", "Faces (CSV)"]
    assert json.loads(entry.result.to_json())["kind"] == "image"

    app.switch_page("pages/gallery.py").run()
    assert not app.exception
    assert any("profile.jpg: the photo, 1 faces" in c.value for c in app.caption)
    assert len(app.get("image")) == 2            # the photo and its one face

    app.switch_page("pages/compare.py").run()
    assert not app.exception
    assert any("1 faces in the photo" in c.value for c in app.caption)
    assert any(s.value == "P(fake) per person" for s in app.subheader)


def test_bad_photos_get_one_line_each_and_the_app_stays_ready(tmp_path, app):
    from tests.test_app import current, upload, upload_dirs

    for path, says in bad_photos(tmp_path):
        upload(app, path)
        [error] = app.error
        assert error.value.startswith(path.name) and says in error.value, error.value
        assert len(error.value.splitlines()) == 1 and current(app) is None
    upload(app, fixtures.make_face_photo(tmp_path / "good.webp"))
    assert not app.error and current(app).result.verdict.label in ("REAL", "FAKE", "UNCERTAIN")
    assert upload_dirs() == []
