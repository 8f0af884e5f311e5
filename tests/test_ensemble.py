"""The fitted ensemble: weights searched on the simplex (every model alone among the candidates),
its own calibration, its card (stale when a member changes), and its use by the pipeline and the
CLI, on real tiny models and generated clips."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from core.cli import main
from core.errors import ModelError
from core.models.model_store import ModelCard
from core.models.zoo import default_selection, fitted_ensemble, load_models
from core.pipeline import analyze_video, make_detector
from core.results import ENSEMBLE
from core.settings import AnalysisSettings
from core.verdicts import ensemble as ens
from core.verdicts.ensemble import EnsembleCard, VideoFaces, fit_ensemble, simplex_grid
from tests import fixtures
from tests.conftest import make_tiny_model


def _synthetic_videos(seed: int = 0, videos: int = 40):
    """Videos where model "good" separates real from fake, "noise" is random and "weak" is
    "good" blurred with noise."""
    rng = np.random.default_rng(seed)
    out = []
    for v in range(videos):
        label = v % 2
        faces = []
        for frame in range(8):
            good = float(np.clip(rng.normal(0.35 + 0.3 * label, 0.12), 0.01, 0.99))
            faces.append((1, frame, {"good": good,
                                     "noise": float(rng.uniform(0.05, 0.95)),
                                     "weak": float(np.clip(good + rng.normal(0, 0.3), 0.01, 0.99))}))
        out.append(VideoFaces(label, faces))
    return out


def test_simplex_grid_holds_every_single_model_and_sums_to_one():
    grid = simplex_grid(3, steps=4)
    assert len(grid) == math.comb(4 + 2, 2)
    np.testing.assert_allclose(grid.sum(axis=1), 1.0)
    for one_hot in np.eye(3):
        assert any(np.array_equal(row, one_hot) for row in grid)


def test_fitted_ensemble_is_never_worse_than_its_best_member_and_weights_the_informative_one():
    videos = _synthetic_videos()
    card = fit_ensemble(videos, ["good", "noise", "weak"], rule="mean", band=0.1)
    singles = card.metrics["member_val_video_auc"]
    assert card.metrics["val_video_auc"] >= max(singles.values()) - 1e-12
    assert max(card.weights, key=card.weights.get) == "good"
    # A member at chance has no measurable signal and takes no part.
    assert "noise" not in card.metrics["eligible_members"] and "noise" not in card.weights
    assert card.metrics["member_val_video_auc_ci95"]["noise"][0] <= 0.5
    low, high = card.metrics["val_video_auc_ci95"]
    assert 0.0 <= low <= card.metrics["val_video_auc"] <= high <= 1.0
    assert 0 < card.metrics["val_decided_share"] <= 1
    # The calibration is an interior optimum, not a bound of the search.
    assert ens.TEMPERATURE_RANGE[0] < card.temperature < ens.TEMPERATURE_RANGE[1]
    # Calibrated, the video scores fit better than the uncalibrated weighted mean.
    labels = [v.label for v in videos]
    weights = np.array([card.weights.get(m, 0.0) for m in ("good", "noise", "weak")])
    raw = ens.video_scores(videos, ["good", "noise", "weak"], weights, "mean")
    assert card.metrics["val_video_log_loss"] <= ens.video_log_loss(labels, raw) + 1e-9


def test_held_weights_are_kept_and_only_the_calibration_is_fitted():
    videos = _synthetic_videos()
    members = ["good", "noise", "weak"]
    searched = fit_ensemble(videos, members, rule="confident", band=0.1)
    held = fit_ensemble(videos, members, rule="confident", band=0.1,
                        weights={"good": 1, "weak": 3})
    assert held.weights == {"good": 0.25, "weak": 0.75}
    assert held.weights != searched.weights
    assert held.metrics["candidates"] == 1
    assert ens.TEMPERATURE_RANGE[0] < held.temperature < ens.TEMPERATURE_RANGE[1]
    labels = [v.label for v in videos]
    raw = ens.video_scores(videos, members, np.array([0.25, 0.0, 0.75]), "confident")
    assert held.metrics["val_video_log_loss"] < ens.video_log_loss(labels, raw)
    with pytest.raises(ValueError, match="held weights"):
        fit_ensemble(videos, members, rule="confident", weights={"absent": 1.0})
    with pytest.raises(ValueError, match="held weights"):
        fit_ensemble(videos, members, rule="confident", weights={"good": 0.0})


def test_a_constant_member_cannot_enter_to_rescale_the_others():
    videos = _synthetic_videos(seed=1)
    for video in videos:
        for _, _, scores in video.faces:
            scores["constant"] = 0.5
    card = fit_ensemble(videos, ["good", "constant"], rule="confident")
    assert card.members == ["good"]
    assert card.metrics["eligible_members"] == ["good"]


def test_face_score_is_the_calibrated_weighted_mean():
    card = EnsembleCard(weights={"a": 3.0, "b": 1.0}, threshold=0.4, temperature=0.5)
    assert card.weights == {"a": 0.75, "b": 0.25}
    mixed = 0.75 * 0.8 + 0.25 * 0.2
    z = (math.log(mixed / (1 - mixed)) - math.log(0.4 / 0.6)) / 0.5
    assert card.face_score({"a": 0.8, "b": 0.2, "c": 0.99}) == pytest.approx(1 / (1 + math.exp(-z)))


def test_ensemble_card_round_trip_and_refusals(tmp_path):
    card = EnsembleCard(weights={"a": 1.0, "b": 0.0}, threshold=0.3, temperature=2.0,
                        member_sha256={"a": "f" * 64})
    assert card.members == ["a"]
    path = card.save(tmp_path / "ensemble.json")
    loaded = EnsembleCard.load(path)
    assert loaded.to_dict() == card.to_dict()
    for bad in ({"weights": {}}, {"weights": {"a": 1}, "threshold": 7},
                {"weights": {"a": 1}, "rule": "vote"}, {"weights": {"a": float("nan")}}, []):
        path.write_text(json.dumps(bad))
        with pytest.raises(ModelError):
            EnsembleCard.load(path)
    path.write_text("{not json")
    with pytest.raises(ModelError, match="not readable JSON"):
        EnsembleCard.load(path)


@pytest.fixture(scope="module")
def zoo_with_ensemble(tmp_path_factory):
    folder = tmp_path_factory.mktemp("zoo_ensemble")
    make_tiny_model(folder, "resnet50", name="fake_leaning", constant_output=0.9)
    make_tiny_model(folder, "vgg16", name="real_leaning", constant_output=0.2)
    make_tiny_model(folder, "inceptionv3", name="bystander", seed=3)
    sha = {n: ModelCard.load(folder / f"{n}.json").sha256 for n in ("fake_leaning", "real_leaning")}
    EnsembleCard(weights={"fake_leaning": 0.25, "real_leaning": 0.75}, member_sha256=sha
                 ).save(folder / ens.ENSEMBLE_CARD)
    return folder


@pytest.fixture(scope="module")
def face_clip(tmp_path_factory):
    return fixtures.make_face_clip(tmp_path_factory.mktemp("clip") / "face.mp4", frames=24)


def test_pipeline_uses_the_fitted_weights_when_all_members_run(zoo_with_ensemble, face_clip):
    card = fitted_ensemble(zoo_with_ensemble)
    assert card is not None and default_selection(zoo_with_ensemble) == ["fake_leaning",
                                                                         "real_leaning"]
    settings = AnalysisSettings(frames=6)
    detector = make_detector(settings)
    everything = load_models("all", zoo_with_ensemble)
    result = analyze_video(face_clip, detector, everything, settings, keep_images=False,
                           ensemble=card)
    assert result.ensemble == {"kind": "fitted", "weights": card.weights}
    assert result.primary == ENSEMBLE and result.faces
    for face in result.faces:
        # The bystander runs (for Compare) but does not count.
        assert face.scores[ENSEMBLE] == pytest.approx(0.25 * 0.9 + 0.75 * 0.2, abs=1e-5)
    assert result.to_dict()["ensemble"]["kind"] == "fitted"

    partial = load_models("fake_leaning,bystander", zoo_with_ensemble)
    fallback = analyze_video(face_clip, detector, partial, settings, keep_images=False,
                             ensemble=card)
    assert fallback.ensemble["kind"] == "mean"
    assert set(fallback.ensemble["weights"]) == {"fake_leaning", "bystander"}


def test_a_retrained_member_makes_the_ensemble_stale(zoo_with_ensemble, tmp_path):
    copy = tmp_path / "zoo"
    shutil.copytree(zoo_with_ensemble, copy)
    assert fitted_ensemble(copy) is not None
    make_tiny_model(copy, "vgg16", name="real_leaning", constant_output=0.3)
    assert fitted_ensemble(copy) is None
    assert set(default_selection(copy)) == {"fake_leaning", "real_leaning", "bystander"}


def test_cli_fits_the_ensemble_and_evaluate_reports_it(tmp_path, tiny_models_dir, capsys):
    zoo = tmp_path / "zoo"
    shutil.copytree(tiny_models_dir, zoo)
    clips = tmp_path / "clips"
    clips.mkdir()
    fixtures.make_face_clip(clips / "real.mp4", frames=16)
    fixtures.make_face_clip(clips / "fake.mp4", frames=16, size=(480, 360), face_size=140)
    fixtures.make_face_clip(clips / "real2.mp4", frames=16, size=(400, 300), face_size=120)
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label,split\nclips/real.mp4,REAL,val\nclips/fake.mp4,FAKE,val\n"
                      "clips/real2.mp4,REAL,val\n")
    assert main(["models", "fit-ensemble", str(labels), "--models-dir", str(zoo),
                 "--frames", "4"]) == 0
    out = capsys.readouterr().out
    assert "weights:" in out and "members alone:" in out
    card = EnsembleCard.load(zoo / ens.ENSEMBLE_CARD)
    assert set(card.members) <= {f"tiny_{b}" for b in ("efficientnetb7", "inceptionresnetv2",
                                                       "inceptionv3", "resnet50", "vgg16")}
    assert card.metrics["val_video_auc"] >= max(card.metrics["member_val_video_auc"].values())
    assert card.fitted_on["split"] == "val" and card.fitted_on["videos"] == 3

    results = tmp_path / "results.json"
    assert main(["evaluate", str(labels), "--split", "val", "--models-dir", str(zoo),
                 "--frames", "4", "--out", str(results)]) == 0
    printed = capsys.readouterr().out
    assert "ensemble: fitted" in printed and "95% interval" in printed
    report = json.loads(results.read_text())
    # By default only the fitted ensemble's members run.
    assert set(report["models"]) == set(card.members) | {"ensemble"}
    assert report["models"]["ensemble"]["auc"] == pytest.approx(card.metrics["val_video_auc"])


def _results(names, scores_by_video, labels):
    from core.evaluation.evaluate import video_metrics

    videos = [{"path": f"v{i}.mp4", "label": y, "scores": dict(zip(names, row))}
              for i, (row, y) in enumerate(zip(scores_by_video, labels))]
    models = {}
    for n, name in enumerate(names):
        metrics = video_metrics(labels, [row[n] for row in scores_by_video])
        models[name] = {**metrics, "videos": len(labels), "no_face": 0}
    return {"models": models, "videos": videos, "seconds": 1.0}


def test_record_eval_fills_cards_table_and_the_gate_guards_default_and_members(
        zoo_with_ensemble, tmp_path, capsys):
    zoo = tmp_path / "zoo"
    shutil.copytree(zoo_with_ensemble, zoo)
    names = ["fake_leaning", "real_leaning", "bystander", "ensemble"]
    labels = [0, 0, 0, 1, 1, 1]
    rows = [[0.1, 0.2, 0.5, 0.15], [0.3, 0.35, 0.5, 0.3], [0.45, 0.3, 0.5, 0.5],
            [0.55, 0.7, 0.5, 0.62], [0.8, 0.4, 0.5, 0.9], [0.9, 0.95, 0.5, 0.95]]
    results = tmp_path / "results.json"
    results.write_text(json.dumps(_results(names, rows, labels)))
    assert main(["models", "record-eval", str(results), "--models-dir", str(zoo)]) == 0
    card = ModelCard.load(zoo / "fake_leaning.json")
    assert card.metrics["pipeline_val_video_auc"] == pytest.approx(1.0)
    # 0.45 and 0.55 lie in the UNCERTAIN band [0.4, 0.6).
    assert card.metrics["pipeline_val_decided_share"] == pytest.approx(4 / 6)
    assert card.metrics["pipeline_val_decided_accuracy"] == pytest.approx(1.0)
    fitted = EnsembleCard.load(zoo / ens.ENSEMBLE_CARD)
    assert fitted.metrics["pipeline_val_decided_share"] == pytest.approx(5 / 6)
    capsys.readouterr()
    assert main(["models", "table", "--models-dir", str(zoo)]) == 0
    table = capsys.readouterr().out
    assert "| **ensemble (default)** | 0.25 × fake_leaning + 0.75 × real_leaning |" in table
    assert table.count("| 67% | 100% |") == 1 and table.rstrip().endswith("| 83% | 100% |")

    assert main(["models", "check-quality", str(results), "--models-dir", str(zoo)]) == 0
    worse = [[r[0], 1 - r[1], r[2], r[3]] for r in rows]      # real_leaning turned upside down
    results.write_text(json.dumps(_results(names, worse, labels)))
    assert main(["models", "check-quality", str(results), "--models-dir", str(zoo)]) == 1
    err = capsys.readouterr().err
    assert "real_leaning val AUC" in err and "ensemble" not in err


def test_bootstrap_interval_is_the_percentile_of_resampled_aucs_ties_included():
    from sklearn.metrics import roc_auc_score

    from core.verdicts.ensemble import bootstrap_auc_interval

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 30)
    scores = np.round(rng.random(30), 1)          # many ties
    draws = np.random.default_rng(0).integers(0, 30, size=(300, 30))
    aucs = [roc_auc_score(labels[d], scores[d]) for d in draws if len(set(labels[d])) == 2]
    expected = np.percentile(aucs, [2.5, 97.5])
    assert bootstrap_auc_interval(labels, scores, resamples=300) == pytest.approx(tuple(expected))
    assert bootstrap_auc_interval([1, 1, 1], [0.2, 0.5, 0.9]) is None
