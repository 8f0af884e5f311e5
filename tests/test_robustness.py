"""The robustness benchmark: the fixed everyday transforms (core.robustness.transforms) on small
generated clips, its cache, and its results (core.robustness.bench)."""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from core.evaluation.evaluate import LabelledVideo
from core.evaluation.metrics import clean, verdict_metrics
from core.results import ENSEMBLE
from core.robustness import bench
from core.robustness.band import BAND_GRID, choose_band, format_band_table
from core.robustness.bench import (UNTOUCHED, content_key, format_results, markdown_table,
                                   run_benchmark, score_change, selection_key, transformed_clip)
from core.robustness.transforms import (CUT, MAX_FRAMES, TRANSFORMS, TRANSFORMS_VERSION, Encode,
                                        apply, brightness_contrast, output_size, suffix)
from tests import fixtures

SIZE = (320, 240)
FRAMES = 20
LONG_FRAMES = 350
ALL = {"none": CUT, **TRANSFORMS}


def _decode(path) -> tuple[list[np.ndarray], Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [f.to_ndarray(format="rgb24") for f in container.decode(stream)], \
            stream.average_rate


def _laplacian_energy(frames) -> float:
    return float(np.mean([cv2.Laplacian(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()
                          for f in frames]))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """20 frames at 320x240, 24 fps, the astronaut's face moving over a textured background."""
    return fixtures.make_face_clip(tmp_path_factory.mktemp("source") / "source.mp4",
                                   frames=FRAMES, size=SIZE, face_size=120)


@pytest.fixture(scope="module")
def long_source(tmp_path_factory):
    """350 tiny frames (64x48), each a different grey level: longer than MAX_FRAMES."""
    images = (np.full((48, 64, 3), (i * 7) % 256, np.uint8) for i in range(LONG_FRAMES))
    return fixtures._encode(tmp_path_factory.mktemp("long") / "long.mp4", images, fps=24,
                            codec="libx264")


@pytest.fixture(scope="module")
def transformed(source, tmp_path_factory):
    """Every transform (and the CUT reference) of the 320x240 source, made once."""
    folder = tmp_path_factory.mktemp("transformed")
    made = {}
    for name, transform in ALL.items():
        target = folder / f"{name}{suffix(transform)}"
        made[name] = (apply(transform, source, target), target)
    return made


@pytest.fixture(scope="module")
def source_frames(source):
    return _decode(source)[0]


def test_twelve_fixed_transforms():
    assert list(TRANSFORMS) == ["crf18", "crf28", "crf36", "crf44", "mjpeg", "vp9", "half",
                                "third", "phone720", "messenger", "brightness", "blur"]
    assert all(t.name == name for name, t in TRANSFORMS.items())
    assert CUT.name == UNTOUCHED == "none"
    assert MAX_FRAMES == 300


@pytest.mark.parametrize("name", list(ALL))
def test_transform_keeps_every_frame(name, transformed, source_frames):
    written, path = transformed[name]
    assert path.is_file() and path.suffix == suffix(ALL[name])
    frames, rate = _decode(path)
    assert written == len(frames) == len(source_frames) == FRAMES
    height, width = frames[0].shape[:2]
    assert width % 2 == 0 and height % 2 == 0
    expected = SIZE
    for encode in ALL[name].encodes:
        expected = output_size(*expected, encode)
    assert (width, height) == expected
    assert rate == 24


def test_sizes_of_the_scaling_transforms(transformed):
    def size(name):
        frames, _ = _decode(transformed[name][1])
        return frames[0].shape[1], frames[0].shape[0]

    assert size("half") == (160, 120)
    assert size("third") == (106, 80)          # 106.7 -> nearest even, 80
    assert size("messenger") == SIZE           # already under 640 px: not enlarged
    assert size("phone720") == SIZE            # short side under 720: not enlarged
    for name in ("crf18", "crf44", "mjpeg", "vp9", "brightness", "blur", "none"):
        assert size(name) == SIZE


def test_output_size_rules():
    half, third = TRANSFORMS["half"].encodes[0], TRANSFORMS["third"].encodes[0]
    phone = TRANSFORMS["phone720"].encodes[0]
    first, second = TRANSFORMS["messenger"].encodes
    assert output_size(320, 240, half) == (160, 120)
    assert output_size(320, 240, third) == (106, 80)
    assert output_size(1920, 1080, phone) == (1280, 720)
    assert output_size(1080, 1920, phone) == (720, 1280)      # portrait: short side is the width
    assert output_size(3840, 2160, phone) == (1280, 720)
    assert output_size(1280, 720, first) == (640, 360)
    assert output_size(720, 1280, first) == (360, 640)
    assert output_size(640, 360, second) == (640, 360)
    assert output_size(1001, 563, half) == (500, 282)         # odd sides become even
    assert output_size(3, 3, Encode(scale=1 / 3)) == (2, 2)   # never below 2
    for w, h in [(321, 241), (97, 55), (1920, 1080)]:
        for t in ALL.values():
            ow, oh = output_size(w, h, t.encodes[0])
            assert ow % 2 == 0 and oh % 2 == 0 and ow >= 2 and oh >= 2


def test_cut_reference_is_pixel_identical(transformed, source_frames):
    frames, _ = _decode(transformed["none"][1])
    assert len(frames) == len(source_frames)
    for ours, theirs in zip(frames, source_frames):
        np.testing.assert_array_equal(ours, theirs)


def test_lossy_transforms_change_pixels(transformed, source_frames):
    for name in ("crf36", "crf44", "mjpeg", "vp9"):
        frames, _ = _decode(transformed[name][1])
        assert any(not np.array_equal(a, b) for a, b in zip(frames, source_frames)), name


def test_brightness_raises_the_mean_level(transformed, source_frames):
    plain, _ = _decode(transformed["crf18"][1])
    bright, _ = _decode(transformed["brightness"][1])
    assert np.mean(bright) - np.mean(plain) > 10
    expected = np.mean([brightness_contrast(f) for f in source_frames])
    assert np.mean(bright) == pytest.approx(expected, abs=2.5)
    # The contrast also spreads the levels.
    assert np.std(bright) > 1.15 * np.std(plain)


def test_brightness_contrast_by_hand():
    frame = np.array([[[0, 128, 255], [100, 200, 40]]], np.uint8)
    # (x - 128) * 1.25 + 148, clipped: 0 -> -12 -> 0, 128 -> 148, 255 -> 306.75 -> 255,
    # 100 -> 113, 200 -> 238, 40 -> 38.
    np.testing.assert_array_equal(brightness_contrast(frame), [[[0, 148, 255], [113, 238, 38]]])


def test_blur_lowers_high_frequencies(transformed):
    plain, _ = _decode(transformed["crf18"][1])
    blurred, _ = _decode(transformed["blur"][1])
    assert _laplacian_energy(blurred) < 0.25 * _laplacian_energy(plain)
    assert np.mean(blurred) == pytest.approx(np.mean(plain), abs=2.0)


@pytest.mark.parametrize("name", list(ALL))
def test_long_clip_cut_at_max_frames(name, long_source, tmp_path):
    transform = ALL[name]
    target = tmp_path / f"long{suffix(transform)}"
    written = apply(transform, long_source, target)
    frames, rate = _decode(target)
    assert written == len(frames) == MAX_FRAMES
    assert rate == 24
    height, width = frames[0].shape[:2]
    expected = (64, 48)
    for encode in transform.encodes:
        expected = output_size(*expected, encode)
    assert (width, height) == expected
    # The first 300 frames, in order: frame i is grey level 7 i (mod 256), give or take the
    # codec's rounding (under half the step between neighbours, so a shifted frame shows).
    levels = np.array([f.mean() for f in frames])
    truth = np.array([(i * 7) % 256 for i in range(MAX_FRAMES)], dtype=np.float64)
    if name == "brightness":
        truth = np.clip((truth - 128) * 1.25 + 148, 0, 255)
    assert np.abs(levels - truth).max() <= 3.4, name
    if name == "none":
        source_frames, _ = _decode(long_source)
        assert len(source_frames) == LONG_FRAMES
        for ours, theirs in zip(frames, source_frames[:MAX_FRAMES]):
            np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("name", ["none", "crf28"])
def test_portrait_phone_clip_keeps_its_orientation(name, tmp_path):
    from core.media.video import probe

    # Stored 320x240, shown 240x320 through a display matrix, as phones write portrait clips.
    phone = fixtures.make_face_clip(tmp_path / "portrait.mp4", frames=10, size=(240, 320),
                                    face_size=120, rotation=90)
    target = tmp_path / f"{name}.mp4"
    apply(ALL[name], phone, target)
    shown, made = probe(phone), probe(target)
    assert (shown.width, shown.height) == (240, 320)
    assert (made.width, made.height) == (shown.width, shown.height)


def test_apply_leaves_no_temporary_clip(source, tmp_path, private_tempdir):
    target = tmp_path / "messenger.mp4"
    assert apply(TRANSFORMS["messenger"], source, target) == FRAMES
    assert list(Path(private_tempdir).iterdir()) == []
    assert [p.name for p in tmp_path.iterdir()] == ["messenger.mp4"]


def test_transformed_clip_from_a_damaged_source_leaves_nothing(tmp_path):
    # Bytes overwritten mid-clip: the decoder gives up part way, after the encode has begun.
    damaged = fixtures.make_corrupted_clip(tmp_path / "damaged.mp4")
    cache = tmp_path / "cache"
    with pytest.raises(Exception):
        transformed_clip("crf28", damaged, content_key(damaged), cache)
    assert list((cache / "clips" / f"v{TRANSFORMS_VERSION}" / "crf28").iterdir()) == []


def test_content_key_follows_the_bytes(source, tmp_path):
    key = content_key(source)
    assert len(key) == 20 and all(c in "0123456789abcdef" for c in key)
    copy = tmp_path / "elsewhere.mp4"
    copy.write_bytes(source.read_bytes())
    assert content_key(copy) == key
    copy.write_bytes(source.read_bytes() + b"\0")
    assert content_key(copy) != key


def test_transformed_clip_is_cached_and_atomic(source, tmp_path, monkeypatch):
    key = content_key(source)
    path = transformed_clip("crf28", source, key, tmp_path)
    assert path == tmp_path / "clips" / f"v{TRANSFORMS_VERSION}" / "crf28" / f"{key}.mp4"
    assert len(_decode(path)[0]) == FRAMES
    stamp = path.stat().st_mtime_ns
    assert not list(tmp_path.rglob(".partial-*"))

    def refuse(*args):
        raise AssertionError("re-encoded a cached clip")

    monkeypatch.setattr(bench, "apply", refuse)
    assert transformed_clip("crf28", source, key, tmp_path) == path
    assert path.stat().st_mtime_ns == stamp
    # The untouched reference lives beside the transforms, with the same key.
    monkeypatch.undo()
    reference = transformed_clip(UNTOUCHED, source, key, tmp_path)
    assert reference == tmp_path / "clips" / f"v{TRANSFORMS_VERSION}" / "none" / f"{key}.mp4"
    assert not list(tmp_path.rglob(".partial-*"))


def test_transformed_clip_interrupted_leaves_nothing(source, tmp_path, monkeypatch):
    def half_then_fail(transform, src, target):
        Path(target).write_bytes(b"half a clip")
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "apply", half_then_fail)
    with pytest.raises(KeyboardInterrupt):
        transformed_clip("vp9", source, "k" * 20, tmp_path)
    folder = tmp_path / "clips" / f"v{TRANSFORMS_VERSION}" / "vp9"
    assert list(folder.iterdir()) == []
    monkeypatch.undo()
    # The next run makes it whole.
    path = transformed_clip("vp9", source, "k" * 20, tmp_path)
    assert path.name == "k" * 20 + ".webm"
    assert len(_decode(path)[0]) == FRAMES
    assert [p.name for p in folder.iterdir()] == [path.name]


def test_selection_key_follows_models_and_settings():
    settings = {"frames": 32, "band": 0.1, "views": "flip,jpeg"}
    base = selection_key({"a": "1" * 64, "b": "2" * 64}, None, settings)
    assert len(base) == 16
    assert selection_key({"b": "2" * 64, "a": "1" * 64}, None, dict(settings)) == base
    assert selection_key({"a": "1" * 64, "b": "3" * 64}, None, settings) != base
    assert selection_key({"a": "1" * 64}, None, settings) != base
    assert selection_key({"a": "1" * 64, "b": "2" * 64}, "e" * 64, settings) != base
    assert selection_key({"a": "1" * 64, "b": "2" * 64}, None, {**settings, "band": 0.15}) != base
    assert selection_key({"a": "1" * 64, "b": "2" * 64}, None, {**settings, "views": ""}) != base


def _row(label, p, call):
    return {"label": label, "scores": {"m": p}, "calls": {"m": call}}


def test_score_change_by_hand():
    untouched = [_row(0, 0.2, "REAL"), _row(1, 0.7, "FAKE"), _row(0, 0.45, "UNCERTAIN")]
    after = [_row(0, 0.6, "FAKE"), _row(1, 0.9, "FAKE"), _row(0, 0.40, "UNCERTAIN")]
    change = score_change(untouched, after, "m")
    # |changes| 0.4, 0.2, 0.05; the real ones 0.4 and 0.05; one clip changed its label.
    assert change["mean_abs_change"] == pytest.approx(0.65 / 3)
    assert change["mean_abs_change_real"] == pytest.approx(0.225)
    assert change["flips"] == 1 and isinstance(change["flips"], int)
    assert score_change(untouched, untouched, "m") == \
        {"mean_abs_change": 0.0, "mean_abs_change_real": 0.0, "flips": 0}
    only_fakes = score_change([_row(1, 0.7, "FAKE")], [_row(1, 0.5, "UNCERTAIN")], "m")
    assert only_fakes["mean_abs_change"] == pytest.approx(0.2)
    assert only_fakes["mean_abs_change_real"] is None
    assert only_fakes["flips"] == 1


def test_format_results_by_hand():
    untouched = [_row(0, 0.2, "REAL"), _row(0, 0.45, "UNCERTAIN"), _row(1, 0.7, "FAKE"),
                 _row(1, 0.8, "FAKE")]
    after = [_row(0, 0.6, "FAKE"), _row(0, 0.40, "UNCERTAIN"), _row(1, 0.3, "REAL"),
             _row(1, 0.95, "FAKE")]

    def measured(rows):
        return verdict_metrics([r["label"] for r in rows], [r["scores"]["m"] for r in rows], 0.1,
                               calls=[r["calls"]["m"] for r in rows], intervals=False)

    results = {"band": 0.1, "transforms": {
        "none": {"description": "the clip as it is", "models": {"m": measured(untouched)}},
        "crf36": {"description": "H.264 CRF 36 (blocky)", "models": {"m": measured(after)},
                  "change": {"m": score_change(untouched, after, "m")}},
    }}
    lines = format_results(results, "m").splitlines()
    assert lines[0] == "m: band 0.1"
    assert "real→FAKE" in lines[1] and "flips" in lines[1]
    none, crf36 = lines[2].split(), lines[3].split()
    assert none == ["none", "1.000", "0/2", "0/2", "n/a", "n/a", "the", "clip", "as", "it", "is"]
    # AUC: reals 0.6, 0.4 against fakes 0.3, 0.95: 2 of 4 pairs. |ΔP| 0.4, 0.05, 0.4, 0.15.
    assert crf36 == ["crf36", "0.500", "1/2", "1/2", "0.250", "0.225", "2",
                     "H.264", "CRF", "36", "(blocky)"]
    table = markdown_table(results, "m").splitlines()
    assert table[0] == "m, band 0.1:" and table[2].startswith("| transform | AUC |")
    assert table[5] == "| crf36: H.264 CRF 36 (blocky) | 0.500 | 1/2 | 1/2 | 0.250 | 0.225 | 2 |"


def _band_row(band: float, **sets) -> dict:
    counted = {name: dict(zip(("real", "fake", "real_called_fake", "fake_called_real", "decided",
                               "right"), values), clips=values[0] + values[1])
               for name, values in sets.items()}
    pooled = {key: sum(c[key] for c in counted.values()) for key in next(iter(counted.values()))}
    return {"band": band, "sets": counted, "pooled": pooled}


def test_the_band_chosen_never_accuses_more_and_decides_where_it_pays():
    table = [
        # the narrowest band decides most and is right most, but calls a re-encoded real FAKE
        _band_row(0.0, none=(2, 3, 0, 1, 5, 4), crf36=(2, 3, 1, 0, 5, 4)),
        # right twice more than the reference, one more fake called REAL: a gain of one
        _band_row(0.05, none=(2, 3, 0, 1, 4, 3), crf36=(2, 3, 0, 0, 3, 3)),
        # as good as 0.05: the wider one is kept
        _band_row(0.08, none=(2, 3, 0, 1, 4, 3), crf36=(2, 3, 0, 0, 3, 3)),
        _band_row(0.1, none=(2, 3, 0, 0, 2, 2), crf36=(2, 3, 0, 0, 2, 2)),
        _band_row(0.2, none=(2, 3, 0, 0, 0, 0), crf36=(2, 3, 0, 0, 0, 0)),
    ]
    choice = choose_band(table, 0.1)
    assert choice == {"band": 0.08, "reference": 0.1, "gain": 1, "excluded": [0.0]}
    assert choose_band(table[3:], 0.1)["band"] == 0.1     # nothing narrower pays: keep it
    with pytest.raises(ValueError, match="reference band 0.3"):
        choose_band(table, 0.3)
    text = format_band_table(table, choice)
    assert "0.08" in text.splitlines()[3] and "<- chosen" in text.splitlines()[3]
    assert "(crf36 1/2)" in text.splitlines()[1]


def test_unknown_transform_is_refused_before_any_work():
    with pytest.raises(ValueError, match="unknown transform sepia"):
        run_benchmark([], ["crf36", "sepia"], None, None)


@pytest.fixture
def few_resamples(monkeypatch):
    from core.evaluation import metrics

    monkeypatch.setattr(metrics, "BOOTSTRAP_RESAMPLES", 100)


@pytest.mark.slow
def test_run_benchmark_end_to_end_and_from_cache(tmp_path, tiny_resnet_dir, monkeypatch,
                                                 few_resamples):
    from core.scan.local import LocalEngine
    from core.scan.scanner import ScannerConfig
    from core.settings import AnalysisSettings

    real = fixtures.make_face_clip(tmp_path / "real.mp4", frames=FRAMES, size=SIZE,
                                   face_size=120)
    fake = fixtures.make_face_clip(tmp_path / "fake.mp4", frames=FRAMES, size=SIZE,
                                   face_size=110)
    videos = [LabelledVideo(real, 0), LabelledVideo(fake, 1)]
    config = ScannerConfig(models="all", models_dir=str(tiny_resnet_dir), ensemble="mean",
                           settings=AnalysisSettings(frames=4))
    started = []

    def start_engine():
        started.append(1)
        return LocalEngine(config)

    cache = tmp_path / "cache"
    progress = []
    results = run_benchmark(videos, ["crf36", "half"], config, start_engine, cache=cache,
                            on_clip=lambda done, total: progress.append((done, total)))
    assert started == [1]
    assert progress == [(i, 6) for i in range(1, 7)]
    assert results["band"] == AnalysisSettings().band
    assert results["cache"] == str(cache)
    assert list(results["transforms"]) == ["none", "crf36", "half"]
    names = ["tiny_resnet50", ENSEMBLE]
    for name, entry in results["transforms"].items():
        assert entry["description"] == ALL[name].description
        assert list(entry["models"]) == names
        assert entry["datasets"] == {}
        for m in entry["models"].values():
            assert (m["videos"], m["real_videos"], m["fake_videos"]) == (2, 1, 1)
            assert 0.0 <= m["auc"] <= 1.0
            assert m["real_called_fake"] in (0, 1) and m["fake_called_real"] in (0, 1)
        if name == "none":
            assert "change" not in entry
        else:
            assert list(entry["change"]) == names
            for change in entry["change"].values():
                assert change["mean_abs_change"] >= 0.0
                assert change["mean_abs_change_real"] >= 0.0
                assert isinstance(change["flips"], int) and 0 <= change["flips"] <= 2
    assert list(results["videos"]) == ["none", "crf36", "half"]
    for rows in results["videos"].values():
        assert [r["label"] for r in rows] == [0, 1]
        assert [r["path"] for r in rows] == [str(real), str(fake)]
        for r in rows:
            assert set(r["scores"]) == set(names) and set(r["calls"]) == set(names)
            assert all(0.0 <= p <= 1.0 for p in r["scores"].values())
    # The untouched reference is the clip itself: a face is found in both.
    assert all(r["calls"][ENSEMBLE] != "NO_FACE" for r in results["videos"]["none"])
    # The change is what the rows say.
    for name in ("crf36", "half"):
        before = [r["scores"][ENSEMBLE] for r in results["videos"]["none"]]
        after = [r["scores"][ENSEMBLE] for r in results["videos"][name]]
        assert results["transforms"][name]["change"][ENSEMBLE]["mean_abs_change"] == \
            pytest.approx(np.mean(np.abs(np.subtract(after, before))))
    json.dumps(clean(results), allow_nan=False)
    text = format_results(results)
    assert len(text.splitlines()) == 2 + 3

    clips = sorted(p.relative_to(cache) for p in (cache / "clips").rglob("*.mp4"))
    assert len(clips) == 6
    reports = sorted((cache / "reports" / results["selection"]).glob("*.json"))
    assert len(reports) == 6
    stamps = {p: p.stat().st_mtime_ns for p in (cache / "clips").rglob("*.mp4")}
    stamps.update({p: p.stat().st_mtime_ns for p in reports})

    # Again: nothing re-encoded, nothing analysed, the same results.
    def refuse(*args):
        raise AssertionError("re-encoded a cached clip")

    monkeypatch.setattr(bench, "apply", refuse)
    again = run_benchmark(videos, ["crf36", "half"], config,
                          lambda: pytest.fail("started an engine for cached reports"),
                          cache=cache)
    assert again["transforms"] == results["transforms"]
    assert again["videos"] == results["videos"]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert not list(cache.rglob(".partial-*"))

    # Every stored report re-decided at each band: at the run's own band, the run's calls.
    banded = run_benchmark(videos, ["crf36", "half"], config,
                           lambda: pytest.fail("started an engine for cached reports"),
                           cache=cache, bands=BAND_GRID)
    reference = next(row for row in banded["bands"] if row["band"] == results["band"])
    for name, entry in results["transforms"].items():
        measured = entry["models"][ENSEMBLE]
        counted = reference["sets"][name]
        assert (counted["real_called_fake"], counted["fake_called_real"]) == \
            (measured["real_called_fake"], measured["fake_called_real"])
        calls = [r["calls"][ENSEMBLE] for r in results["videos"][name]]
        assert counted["decided"] == sum(c in ("REAL", "FAKE") for c in calls)
    decided = [row["pooled"]["decided"] for row in banded["bands"]]
    assert decided == sorted(decided, reverse=True)     # a wider band never decides more
    assert banded["band_choice"]["reference"] == results["band"]
    assert banded["band_choice"]["band"] in BAND_GRID and banded["band_choice"]["gain"] >= 0
    assert "chosen band" in format_band_table(banded["bands"], banded["band_choice"])

    # A clip that cannot be decoded to the end is left out and named; the rest is measured.
    monkeypatch.setattr(bench, "apply", apply)
    damaged = fixtures.make_corrupted_clip(tmp_path / "damaged.mp4")
    with_damaged = run_benchmark([*videos, LabelledVideo(damaged, 1)], ["crf36", "half"], config,
                                 lambda: pytest.fail("started an engine for cached reports"),
                                 cache=cache)
    assert len(with_damaged["left_out"]) == 1 and str(damaged) in with_damaged["left_out"][0]
    assert with_damaged["transforms"] == results["transforms"]
