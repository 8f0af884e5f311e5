"""`python -m core` as a user runs it: outputs on disk, exit codes, one-line errors."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.cli import main
from core.settings import AnalysisSettings
from tests import fixtures

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    for sub in ("a", "b"):
        (folder / sub).mkdir()
    fixtures.make_face_clip(folder / "a" / "face.mp4", frames=24)
    fixtures.make_face_clip(folder / "b" / "face.mp4", frames=24, size=(480, 360), face_size=140)
    fixtures.make_blank_clip(folder / "blank.mkv")
    return folder


def test_analyze_folder_writes_json_csv_and_summary(clips, tiny_resnet_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["analyze", str(clips), "--models-dir", str(tiny_resnet_dir), "--frames", "6",
                 "--out", str(out)])
    assert code == 0
    # Two face.mp4 in different folders keep separate outputs.
    assert sorted(p.name for p in out.glob("*.json")) == ["a_face.json", "b_face.json", "blank.json"]
    report = json.loads((out / "a_face.json").read_text())
    assert report["verdict"]["label"] in {"REAL", "FAKE", "UNCERTAIN"}
    assert len(report["faces"]) == 6
    assert json.loads((out / "blank.json").read_text())["verdict"]["label"] == "NO_FACE"
    with (out / "a_face.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 6
    with (out / "summary.csv").open() as handle:
        summary = list(csv.DictReader(handle))
    assert len(summary) == 3
    assert sorted(r["verdict"] for r in summary)[0] != "ERROR"
    assert "NO_FACE" in {r["verdict"] for r in summary}
    assert "blank.mkv: NO_FACE" in capsys.readouterr().out


@pytest.mark.parametrize("maker, message", [
    (fixtures.make_empty_file, "empty"),
    (fixtures.make_text_file, "not a video"),
    (fixtures.make_truncated_mp4, "truncated"),
    (fixtures.make_audio_only, "no video stream"),
    (fixtures.make_one_frame_clip, "at least 2 frames"),
])
def test_bad_input_one_line_and_exit_2(tmp_path, tiny_resnet_dir, capsys, maker, message):
    bad = maker(tmp_path / "bad.mp4")
    code = main(["analyze", str(bad), "--models-dir", str(tiny_resnet_dir), "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
    assert message in err[0].lower()
    assert "Traceback" not in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mp4", "o"]


def test_folder_without_videos(tmp_path, tiny_resnet_dir, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["analyze", str(tmp_path), "--models-dir", str(tiny_resnet_dir)]) == 2
    assert "no videos or photos in folder" in capsys.readouterr().err


def test_no_models_is_a_clear_error(tmp_path, clips, capsys):
    assert main(["analyze", str(clips), "--models-dir", str(tmp_path)]) == 2
    assert "no models in" in capsys.readouterr().err


def test_evaluate_writes_the_schema(clips, tiny_models_dir, tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    rel = lambda p: Path(__import__("os").path.relpath(p, tmp_path))  # noqa: E731
    labels.write_text("path,label\n"
                      f"{rel(clips / 'a' / 'face.mp4')},REAL\n"
                      f"{rel(clips / 'b' / 'face.mp4')},1\n"
                      f"{rel(clips / 'blank.mkv')},FAKE\n")
    out = tmp_path / "results.json"
    code = main(["evaluate", str(labels), "--models-dir", str(tiny_models_dir), "--frames", "8",
                 "--out", str(out)])
    assert code == 0
    results = json.loads(out.read_text())
    # No dataset column: nothing per dataset.
    assert set(results) == {"models", "datasets", "videos", "band", "seconds", "views",
                            "views_per_face"}
    assert results["datasets"] == {} and results["band"] == AnalysisSettings().band
    assert results["views_per_face"] == AnalysisSettings().views_per_face
    names = {f"tiny_{b}" for b in ("efficientnetb7", "inceptionresnetv2", "inceptionv3",
                                   "resnet50", "vgg16")}
    # No fitted ensemble: the verdict is the mean of every model, so each scored the views.
    assert results["views"] == {n: ["flip", "jpeg"] for n in names | {"ensemble"}}
    assert set(results["models"]) == names | {"ensemble"}
    for metrics in results["models"].values():
        assert set(metrics) == {
            "auc", "auc_ci95", "log_loss", "accuracy", "ece", "band", "videos", "real_videos",
            "fake_videos", "no_face", "decided_share", "decided_accuracy", "real_called_fake",
            "real_called_fake_share", "real_called_fake_share_ci95", "fake_called_real",
            "fake_called_real_share", "fake_called_real_share_ci95"}
        assert isinstance(metrics["auc"], float) and 0 <= metrics["auc"] <= 1
        assert isinstance(metrics["log_loss"], float) and isinstance(metrics["accuracy"], float)
        assert metrics["videos"] == 3 and metrics["no_face"] == 1
        assert (metrics["real_videos"], metrics["fake_videos"]) == (1, 2)
        # The blank clip has no face: NO_FACE is neither an accusation nor a miss.
        assert metrics["fake_called_real"] <= 1 and metrics["real_called_fake"] <= 1
    assert [v["label"] for v in results["videos"]] == [0, 1, 1]
    for video in results["videos"]:
        assert set(video) == {"path", "label", "scores", "calls"}
        assert set(video["scores"]) == names | {"ensemble"}
        assert set(video["calls"]) == names | {"ensemble"}
    blank = results["videos"][2]
    assert set(blank["scores"].values()) == {0.5}
    assert set(blank["calls"].values()) == {"NO_FACE"}
    assert isinstance(results["seconds"], float)
    assert "ensemble" in capsys.readouterr().out


def test_evaluate_dfdc_folder_and_bad_labels(tmp_path, clips, tiny_resnet_dir, capsys):
    folder = tmp_path / "dfdc"
    folder.mkdir()
    (folder / "x.mp4").write_bytes((clips / "a" / "face.mp4").read_bytes())
    (folder / "y.mp4").write_bytes((clips / "b" / "face.mp4").read_bytes())
    (folder / "metadata.json").write_text(json.dumps({
        "x.mp4": {"label": "REAL", "split": "train"}, "y.mp4": {"label": "FAKE", "split": "train",
                                                              "original": "x.mp4"}}))
    out = tmp_path / "r.json"
    assert main(["evaluate", str(folder), "--models-dir", str(tiny_resnet_dir), "--frames", "3",
                 "--out", str(out)]) == 0
    assert [v["label"] for v in json.loads(out.read_text())["videos"]] == [0, 1]
    bad = tmp_path / "bad.csv"
    bad.write_text("file,truth\nx.mp4,REAL\n")
    assert main(["evaluate", str(bad), "--models-dir", str(tiny_resnet_dir)]) == 2
    assert "'path' and 'label'" in capsys.readouterr().err


def test_module_entry_point_help():
    done = subprocess.run([sys.executable, "-m", "core", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0
    for command in ("analyze", "evaluate", "models"):
        assert command in done.stdout


def test_record_eval_table_and_quality_gate(tmp_path, capsys):
    from tests.conftest import make_tiny_model

    make_tiny_model(tmp_path, "vgg16")
    results = {"models": {"tiny_vgg16": {"auc": 0.8, "log_loss": 0.5, "accuracy": 0.75, "videos": 4,
                                         "no_face": 0},
                          "ensemble": {"auc": 0.9, "log_loss": 0.4, "accuracy": 0.75, "videos": 4,
                                       "no_face": 0}},
               "videos": [], "seconds": 1.0, "views": {"tiny_vgg16": [], "ensemble": []}}
    # record-eval measures from the per-video scores: 5 real, 2 fake clips; the model orders 8
    # of the 10 real-fake pairs right (AUC 0.8), the ensemble 9 (0.9).
    real, model_fakes, ensemble_fakes = [0.1, 0.2, 0.3, 0.4, 0.7], [0.35, 0.8], [0.5, 0.8]
    results["videos"] = [
        {"path": f"v{i}.mp4", "label": label, "scores": {"tiny_vgg16": m, "ensemble": e},
         **({"dataset": "A" if i % 2 else "B"})}
        for i, (label, m, e) in enumerate([(0, p, p) for p in real]
                                          + [(1, m, e) for m, e in zip(model_fakes, ensemble_fakes)])]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    sha_before = json.loads((tmp_path / "tiny_vgg16.json").read_text())["sha256"]
    assert main(["models", "record-eval", str(path), "--models-dir", str(tmp_path)]) == 0
    card = json.loads((tmp_path / "tiny_vgg16.json").read_text())
    assert card["metrics"]["pipeline_val_video_auc"] == pytest.approx(0.8)
    assert card["metrics"]["ensemble_val_video_auc"] == 0.9
    # At the default band (0.11: P >= 0.61 FAKE, < 0.39 REAL): the real clip at 0.7 is called
    # FAKE and the fake at 0.35 REAL.
    assert card["metrics"]["pipeline_val_real_called_fake"] == 1
    assert card["metrics"]["pipeline_val_fake_called_real"] == 1
    assert set(card["metrics"]["pipeline_val_datasets"]) == {"A", "B"}
    assert card["metrics"]["pipeline_val_views"] == []      # scored on the crops as found
    assert "pipeline_val_views_per_face" not in card["metrics"]
    # Scored in views, each face in one of them in turn: the card says both.
    path.write_text(json.dumps({**results, "views_per_face": "one", "views": {
        "tiny_vgg16": ["flip", "jpeg"], "ensemble": ["flip", "jpeg"]}}))
    assert main(["models", "record-eval", str(path), "--models-dir", str(tmp_path)]) == 0
    card = json.loads((tmp_path / "tiny_vgg16.json").read_text())
    assert card["metrics"]["pipeline_val_views"] == ["flip", "jpeg"]
    assert card["metrics"]["pipeline_val_views_per_face"] == "one"
    path.write_text(json.dumps(results))
    assert main(["models", "record-eval", str(path), "--models-dir", str(tmp_path)]) == 0
    card = json.loads((tmp_path / "tiny_vgg16.json").read_text())
    assert "pipeline_val_views_per_face" not in card["metrics"]      # not a stale one
    assert card["sha256"] == sha_before
    assert main(["models", "table", "--models-dir", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "| tiny_vgg16 | vgg16 | block2_pool | 64 |" in table and "| 0.800 [" in table
    assert "| 1/5 | 1/2 |" in table
    # A run on a GPU says so beside its wall time, which is not this CPU's.
    card["training"]["wall_seconds"] = 300
    card["training"]["machine"] = {"keras_backend": "torch", "accelerator": "NVIDIA H200"}
    (tmp_path / "tiny_vgg16.json").write_text(json.dumps(card))
    assert main(["models", "table", "--models-dir", str(tmp_path)]) == 0
    assert "| 5 min (GPU) |" in capsys.readouterr().out
    # Within the tolerance passes; more than 0.02 below the recorded ensemble AUC fails.
    results["models"]["ensemble"]["auc"] = 0.885
    path.write_text(json.dumps(results))
    assert main(["models", "check-quality", str(path), "--models-dir", str(tmp_path)]) == 0
    results["models"]["ensemble"]["auc"] = 0.87
    path.write_text(json.dumps(results))
    assert main(["models", "check-quality", str(path), "--models-dir", str(tmp_path)]) == 1
    assert "more than 0.02 below" in capsys.readouterr().err


def test_views_on_is_an_analysis_option_with_the_verdicts_models_by_default():
    from core.cli import _settings, build_parser

    parser = build_parser()
    default = _settings(parser.parse_args(["analyze", "clip.mp4"]))
    every = _settings(parser.parse_args(["analyze", "clip.mp4", "--views-on", "all"]))
    assert (default.views_on, every.views_on) == ("verdict", "all")
    with pytest.raises(SystemExit):
        parser.parse_args(["analyze", "clip.mp4", "--views-on", "some"])
    one = _settings(parser.parse_args(["analyze", "clip.mp4", "--views-per-face", "one"]))
    every_view = _settings(parser.parse_args(["analyze", "clip.mp4", "--views-per-face", "all"]))
    assert (one.views_per_face, every_view.views_per_face) == ("one", "all")
    assert default.views_per_face == AnalysisSettings().views_per_face
    with pytest.raises(SystemExit):
        parser.parse_args(["analyze", "clip.mp4", "--views-per-face", "two"])


def test_fit_ensemble_held_weights_are_read_by_name_and_bad_ones_refused():
    from core.cli import _held_weights

    assert _held_weights(None, ["a", "b"]) is None
    assert _held_weights("a=0.5, b=1.5", ["a", "b"]) == {"a": 0.5, "b": 1.5}
    with pytest.raises(SystemExit, match="not one of the models run"):
        _held_weights("c=1", ["a", "b"])
    with pytest.raises(SystemExit, match="not NAME=WEIGHT"):
        _held_weights("a", ["a", "b"])
