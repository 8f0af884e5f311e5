"""Training on extracted faces, end to end (generated clips -> extract -> train -> load and score),
plus the batch pipeline, splits and calibration on synthetic data."""
import json
import math

import cv2
import numpy as np
import pytest

from core import cli
from core.verdicts.calibration import (balanced_accuracy, calibrated, fit_calibration,
                                       fit_temperature, fit_threshold, log_loss)
from core.training.augment import AUGMENT_PRESETS
from core.training.extract import ExtractSettings, read_index
from core.models.model_store import load_classifier
from core.training.train import (COSINE_FLOOR, FaceSet, TrainConfig, effective_class_weights, is_better,
                        jittered_crop, learning_rate, load_faces, make_batch, split_rows,
                        validation_metrics)
from tests.fixtures import extract_clip_faces

TINY = ["--backbone", "vgg16", "--depth", "block2_pool", "--input-size", "64", "--batch", "8",
        "--lr", "1e-4", "--no-progress"]


@pytest.fixture(scope="module")
def faces_dir(tmp_path_factory):
    clips = [{"name": name, "label": label, "split": split, "size": size}
             for name, label, split, size in (("r1", "REAL", "train", (320, 240)),
                                              ("f1", "FAKE", "train", (352, 240)),
                                              ("r2", "REAL", "val", (320, 256)),
                                              ("f2", "FAKE", "val", (352, 256)))]
    out = tmp_path_factory.mktemp("faces")
    report = extract_clip_faces(tmp_path_factory.mktemp("clips"), out, clips,
                                ExtractSettings(real_faces=4, fake_faces=4, frames=5, crop_size=96),
                                frames=10)
    assert report.faces == 16 and not report.failed
    return out


@pytest.fixture(scope="module")
def budget_run(faces_dir, tmp_path_factory):
    """A run stopped by its wall-time budget during epoch 1 of 5."""
    work = tmp_path_factory.mktemp("run")
    out, run_dir = work / "models" / "tiny_vgg.keras", work / "runs" / "tiny"
    code = cli.main(["train", *TINY, "--faces", str(faces_dir), "--out", str(out),
                     "--run-dir", str(run_dir), "--epochs", "5", "--max-minutes", "0.0001",
                     "--augment", "--class-weights", "balanced", "--lr-schedule", "cosine"])
    assert code == 0
    return out, run_dir


def test_budget_stop_still_writes_a_loadable_calibrated_model(budget_run, faces_dir):
    out, run_dir = budget_run
    card = json.loads(out.with_suffix(".json").read_text())
    training = card["training"]
    assert training["recipe"]["stopped"] == "time budget"
    assert training["recipe"]["lr_schedule"] == "cosine"
    assert training["recipe"]["epochs_run"] == 1 and training["recipe"]["best_epoch"] == 1
    assert (training["backbone"], training["depth"], training["input_size"]) == ("vgg16", "block2_pool", 64)
    assert training["weights"] == "none"
    assert training["data"]["train_videos"] == 2 and training["data"]["val_videos"] == 2
    assert training["data"]["train_faces"] == 8 and training["data"]["val_faces"] == 8
    assert training["data"]["sbi_fraction"] == 0.5
    assert training["recipe"]["batch"] == 8 and training["recipe"]["augmentation"]["flip"] == 0.5
    assert training["recipe"]["class_weights"] is not None
    assert training["recipe"]["mixed_precision"] == "float32"
    assert training["machine"]["keras_backend"] == "tensorflow"
    assert training["machine"]["accelerator"] == "cpu" and training["machine"]["cpus"] >= 1
    assert set(card["metrics"]) == {"val_face_auc", "val_video_auc", "val_video_log_loss",
                                    "val_video_accuracy"}
    assert 0 < card["threshold"] < 1 and card["temperature"] > 0

    classifier = load_classifier(out)
    assert classifier.input_size == 64 and classifier.card.depth == "block2_pool"
    crops = np.stack([load_faces([row], 64).images[0] for row in read_index(faces_dir)[:3]])
    crops = np.stack([jittered_crop(c, 64, np.random.default_rng(0)) for c in crops])
    scores = classifier.predict(crops)
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))


def test_resume_continues_from_the_last_epoch(budget_run, capsys):
    out, run_dir = budget_run
    before = json.loads((run_dir / "state.json").read_text())
    capsys.readouterr()
    code = cli.main(["train", "--resume", "--run-dir", str(run_dir), "--epochs", "2",
                     "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "resuming" in printed and "after epoch 1" in printed
    step = int(printed.split("optimizer at step ")[1].split(")")[0])
    assert step >= 1                      # the optimizer state came back with the checkpoint
    state = json.loads((run_dir / "state.json").read_text())
    assert [h["epoch"] for h in state["history"]] == [1, 2]
    assert state["history"][0] == before["history"][0]
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["recipe"]["epochs_run"] == 2
    assert card["training"]["recipe"]["stopped"] == "epochs done"


def test_existing_run_is_not_overwritten_without_resume(budget_run, faces_dir, capsys):
    out, run_dir = budget_run
    code = cli.main(["train", *TINY, "--faces", str(faces_dir), "--out", str(out),
                     "--run-dir", str(run_dir), "--epochs", "1"])
    assert code == 2 and "--resume" in capsys.readouterr().err


def test_imagenet_weights_offline_fail_clearly(faces_dir, tmp_path, monkeypatch, capsys):
    from core.models.backbones import imagenet_weights_path

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty_keras"))
    try:
        imagenet_weights_path("resnet50")
        pytest.skip("ImageNet weights are cached on this machine")
    except Exception:
        pass
    code = cli.main(["train", "--backbone", "resnet50", "--weights", "imagenet",
                     "--faces", str(faces_dir), "--out", str(tmp_path / "m.keras"),
                     "--run-dir", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert "ImageNet weights for resnet50" in err and "resnet50_weights" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


# --- batches and splits ----------------------------------------------------------------------

def test_batches_turn_real_faces_into_sbi_fakes(faces_dir):
    rows = [r for r in read_index(faces_dir) if r["label"] == 0]
    faces = load_faces(rows, 72)
    assert all(im.shape == (72, 72, 3) and im.dtype == np.uint8 for im in faces.images)
    assert np.all(np.isfinite(faces.keypoints))
    everything = list(range(len(faces)))
    x, y, no_teacher = make_batch(faces, everything, 64, np.random.default_rng(1),
                                  sbi_fraction=1.0, augmentation=None)
    assert no_teacher is None
    assert x.shape == (len(rows), 64, 64, 3) and x.dtype == np.float32
    assert 0 <= x.min() and x.max() <= 255 and np.all(y == 1)
    x0, y0, _ = make_batch(faces, everything, 64, np.random.default_rng(1), sbi_fraction=0.0,
                           augmentation=None)
    assert np.all(y0 == 0)
    # SBI changed pixels (the labels alone could not tell).
    assert not np.array_equal(x, x0)


def test_jittered_crop_keeps_the_face_centred():
    image = np.zeros((100, 100, 3), np.uint8)
    image[45:55, 45:55] = 255
    for seed in range(20):
        out = jittered_crop(image, 50, np.random.default_rng(seed))
        ys, xs = np.nonzero(out[..., 0] > 128)
        assert abs(ys.mean() - 24.5) < 3 and abs(xs.mean() - 24.5) < 3


def test_cosine_schedule_decays_over_the_planned_epochs():
    config = TrainConfig(backbone="vgg16", faces="f", out="o.keras", run_dir="r", lr=1e-3,
                         epochs=4, lr_schedule="cosine")
    schedule = learning_rate(config, steps_per_epoch=10)
    rates = [float(schedule(step)) for step in (0, 20, 40, 400)]
    assert math.isclose(rates[0], 1e-3, rel_tol=1e-6)
    assert math.isclose(rates[1], 1e-3 * (COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5), rel_tol=1e-4)
    assert math.isclose(rates[2], 1e-3 * COSINE_FLOOR, rel_tol=1e-4)
    assert math.isclose(rates[3], rates[2], rel_tol=1e-6)
    constant = TrainConfig(backbone="vgg16", faces="f", out="o.keras", run_dir="r", lr=2e-4)
    assert learning_rate(constant, steps_per_epoch=10) == 2e-4
    with pytest.raises(ValueError, match="lr schedule"):
        TrainConfig(backbone="vgg16", faces="f", out="o.keras", run_dir="r", lr_schedule="step")


def test_split_by_group_when_index_has_no_val_rows():
    rows = [{"split": "train", "group": f"g{i % 10}", "video_id": f"v{i}"} for i in range(200)]
    train, val, how = split_rows(rows, 0.3)
    assert train and val and "group" in how
    assert not {r["group"] for r in train} & {r["group"] for r in val}
    explicit = rows[:5] + [{"split": "val", "group": "x", "video_id": "w"}]
    train, val, how = split_rows(explicit)
    assert len(val) == 1 and len(train) == 5 and how == "index split column"


def test_class_weights_count_sbi_fakes_as_fakes():
    weights = effective_class_weights(np.array([0] * 6 + [1] * 2), sbi_fraction=0.5)
    # 3 reals stay real, 5 faces are fake: each class then weighs the same in total.
    assert math.isclose(weights[0] * 3, weights[1] * 5)
    assert math.isclose(weights[0] * 3 + weights[1] * 5, 8)


def test_class_weights_follow_the_classes_a_mixture_draws():
    labels = np.array([0] * 100 + [1] * 500)            # ignored: the mixture sets the shares
    # 85% reals, 40% of them self-blended: 51% stay real, 49% fake.
    weights = effective_class_weights(labels, sbi_fraction=0.4, drawn_fake_share=0.15)
    assert math.isclose(weights[0] * 0.51, weights[1] * 0.49)
    # SBI fakes only, half the reals blended: the classes are already even.
    assert effective_class_weights(labels, 0.5, drawn_fake_share=0.0) == {0: 1.0, 1: 1.0}


def test_best_epoch_prefers_video_auc_then_log_loss():
    assert is_better({"video_auc": 0.8, "video_log_loss": 0.9}, {"video_auc": 0.7, "video_log_loss": 0.1})
    assert is_better({"video_auc": 0.8, "video_log_loss": 0.4}, {"video_auc": 0.8, "video_log_loss": 0.5})
    assert not is_better({"video_auc": 0.8, "video_log_loss": 0.6}, {"video_auc": 0.8, "video_log_loss": 0.5})
    assert is_better({"video_auc": 0.5, "video_log_loss": 0.6}, None)


def test_video_metrics_average_faces_per_video():
    faces = FaceSet(images=[None] * 4, keypoints=np.zeros((4, 5, 2)), labels=np.array([0, 0, 1, 1]),
                    videos=np.array(["a", "a", "b", "b"]), video_labels={"a": 0, "b": 1})
    metrics = validation_metrics(np.array([0.9, 0.1, 0.6, 0.6]), faces)
    assert metrics["face_auc"] == 0.5          # face level: 0.9 beats both fakes
    assert metrics["video_auc"] == 1.0         # video level: 0.5 < 0.6
    assert metrics["video_accuracy"] == 0.5    # 0.5 counts as fake at the 0.5 threshold


# --- calibration -----------------------------------------------------------------------------

def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_threshold_maximises_balanced_accuracy():
    # Fakes score 0.7..0.9, reals 0.1..0.6 (many more reals): only t in (0.6, 0.7) is perfect.
    rng = np.random.default_rng(0)
    reals, fakes = rng.uniform(0.1, 0.6, 300), rng.uniform(0.7, 0.9, 20)
    scores = np.concatenate([reals, fakes])
    labels = np.r_[np.zeros(300), np.ones(20)].astype(int)
    t = fit_threshold(scores, labels)
    assert reals.max() < t < fakes.min()
    assert balanced_accuracy(labels, scores, t) == 1.0
    # Overlapping classes: the fitted threshold is at least as good as any other.
    noisy = np.clip(scores + rng.normal(0, 0.15, scores.size), 0.001, 0.999)
    t = fit_threshold(noisy, labels)
    best = balanced_accuracy(labels, noisy, t)
    assert all(balanced_accuracy(labels, noisy, c) <= best + 1e-12 for c in np.linspace(0, 1, 201))


def test_temperature_undoes_overconfidence():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, 20000)
    labels = (rng.random(z.size) < sigmoid(z)).astype(int)     # true probability sigmoid(z)
    overconfident = sigmoid(3 * z)
    temperature = fit_temperature(overconfident, labels, 0.5)
    assert 2.7 < temperature < 3.3
    assert log_loss(labels, calibrated(overconfident, 0.5, temperature)) < log_loss(labels, overconfident)


def test_calibration_moves_the_threshold_to_one_half():
    rng = np.random.default_rng(2)
    video_labels = np.r_[np.zeros(50), np.ones(50)].astype(int)
    video_scores = np.r_[rng.uniform(0.01, 0.2, 50), rng.uniform(0.3, 0.5, 50)]
    result = fit_calibration(video_scores, video_labels, video_scores, video_labels)
    assert 0.2 < result.threshold < 0.3 and result.temperature > 0
    moved = calibrated(video_scores, result.threshold, result.temperature)
    assert np.all((moved >= 0.5) == (video_labels == 1))


def test_calibration_with_one_class_keeps_defaults():
    assert fit_threshold([0.2, 0.4], [1, 1]) == 0.5
    assert fit_temperature([0.2, 0.4], [1, 1]) == 1.0
    with pytest.raises(ValueError):
        fit_threshold([0.2], [0, 1])


# --- distillation ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory):
    """A real (tiny, untrained) model with a known calibrated output: P(fake) 0.8 for every face,
    threshold 0.5, temperature 1."""
    from tests.conftest import make_tiny_model

    folder = tmp_path_factory.mktemp("teacher")
    make_tiny_model(folder, "resnet50", name="teacher", constant_output=0.8)
    return folder / "teacher.keras"


def test_the_teacher_sees_the_students_face_and_mixes_its_score_into_the_target(
        faces_dir, teacher_path):
    from core.training.distill import load_teacher

    teacher = load_teacher(teacher_path, weight=0.25)
    assert teacher.input_size == 64 and teacher.name == "teacher"
    faces = load_faces(read_index(faces_dir), 80)
    x, y, x_teacher = make_batch(faces, list(range(len(faces))), 48, np.random.default_rng(3),
                                 sbi_fraction=0.5, augmentation=AUGMENT_PRESETS["compression"],
                                 teacher_size=64)
    assert x.shape[1:] == (48, 48, 3) and x_teacher.shape[1:] == (64, 64, 3)
    # The same augmented face at two sizes: the student's is the teacher's, resized.
    for student, seen in zip(x, x_teacher):
        resized = cv2.resize(seen.astype(np.uint8), (48, 48), interpolation=cv2.INTER_AREA)
        assert np.abs(resized.astype(float) - student).mean() < 4.0
    targets = teacher.targets(y, x_teacher)
    np.testing.assert_allclose(targets, 0.25 * 0.8 + 0.75 * y, atol=1e-5)
    assert sorted(set(np.round(targets.astype(float), 4).tolist())) == [0.2, 0.95]


def test_train_with_a_teacher_records_the_distillation(faces_dir, teacher_path, tmp_path):
    out = tmp_path / "student.keras"
    code = cli.main(["train", *TINY, "--faces", str(faces_dir), "--out", str(out),
                     "--run-dir", str(tmp_path / "run"), "--epochs", "1",
                     "--teacher", str(teacher_path), "--distill-weight", "0.7"])
    assert code == 0
    card = json.loads(out.with_suffix(".json").read_text())
    distillation = card["training"]["distillation"]
    assert distillation["teacher"] == "teacher" and distillation["weight"] == 0.7
    assert card["training"]["command"].startswith("python -m core train --backbone vgg16")
    assert "--distill-weight 0.7" in card["training"]["command"]
    assert distillation["teacher_sha256"] == json.loads(
        teacher_path.with_suffix(".json").read_text())["sha256"]
    assert load_classifier(out).predict(np.zeros((1, 64, 64, 3))).shape == (1,)


def test_a_teacher_that_does_not_match_its_card_is_refused(faces_dir, teacher_path, tmp_path,
                                                          capsys):
    import shutil

    forged = tmp_path / "forged"
    forged.mkdir()
    shutil.copy2(teacher_path.with_suffix(".json"), forged / "teacher.json")
    (forged / "teacher.keras").write_bytes(teacher_path.read_bytes() + b"tampered")
    code = cli.main(["train", *TINY, "--faces", str(faces_dir), "--out", str(tmp_path / "s.keras"),
                     "--run-dir", str(tmp_path / "run"), "--epochs", "1",
                     "--teacher", str(forged / "teacher.keras")])
    assert code == 2
    assert "does not match its card" in capsys.readouterr().err


def test_the_teacher_also_gives_its_unit_length_features_with_a_feature_weight(faces_dir,
                                                                               teacher_path):
    from core.models.backbones import HEAD_LAYER
    from core.training.distill import FEATURE_OUTPUT, load_teacher

    teacher = load_teacher(teacher_path, weight=0.25, feature_weight=0.5)
    faces = load_faces(read_index(faces_dir), 96)
    _, y, x_teacher = make_batch(faces, list(range(8)), 48, np.random.default_rng(3),
                                 sbi_fraction=0.0, augmentation=None, teacher_size=64)
    targets = teacher.targets(y, x_teacher)
    assert set(targets) == {HEAD_LAYER, FEATURE_OUTPUT}
    np.testing.assert_allclose(targets[HEAD_LAYER], 0.25 * 0.8 + 0.75 * y, atol=1e-5)
    features = targets[FEATURE_OUTPUT]
    assert features.shape == (8, teacher.feature_size) and teacher.feature_size == 256
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(features[0], features[1])       # each face its own features


def test_feature_distillation_trains_resumes_and_exports_a_plain_classifier(faces_dir,
                                                                            teacher_path,
                                                                            tmp_path):
    from core.training.distill import FEATURE_OUTPUT

    out, run = tmp_path / "student.keras", tmp_path / "run"
    args = ["train", *TINY, "--faces", str(faces_dir), "--out", str(out), "--run-dir", str(run),
            "--teacher", str(teacher_path), "--distill-weight", "0.5", "--feature-weight", "1"]
    assert cli.main([*args, "--epochs", "1"]) == 0
    assert cli.main(["train", "--resume", "--run-dir", str(run), "--epochs", "2"]) == 0
    state = json.loads((run / "state.json").read_text())
    assert [h["epoch"] for h in state["history"]] == [1, 2]
    assert all(h[f"{FEATURE_OUTPUT}_loss"] > 0 for h in state["history"])
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["distillation"]["feature_weight"] == 1.0
    classifier = load_classifier(out)
    assert FEATURE_OUTPUT not in {layer.name for layer in classifier.model.layers}
    assert classifier.predict(np.zeros((2, 64, 64, 3))).shape == (2,)


def test_a_feature_weight_needs_a_teacher(faces_dir, tmp_path, capsys):
    code = cli.main(["train", *TINY, "--faces", str(faces_dir), "--out", str(tmp_path / "s.keras"),
                     "--run-dir", str(tmp_path / "run"), "--feature-weight", "1"])
    assert code == 2
    assert "needs a teacher" in capsys.readouterr().err


# --- recipes for footage unlike the training set ------------------------------------------------

def test_dataset_balanced_sampling_gives_small_sources_more_than_their_share():
    from core.training.train import dataset_balanced_weights

    datasets = np.array(["FF++"] * 900 + ["DeepFaceLive"] * 100)
    weights = dataset_balanced_weights(datasets)
    assert weights.sum() == pytest.approx(1.0)
    share = weights[datasets == "DeepFaceLive"].sum()
    # 1/sqrt tempering: 100 * 0.1 / (900 / 30 + 100 / 10) = 10 / 40.
    assert share == pytest.approx(0.25)
    assert 0.1 < share < 0.5


def test_everyday_augmentation_can_encode_twice_and_changes_pixels():
    preset = AUGMENT_PRESETS["everyday"]
    assert preset.jpeg_twice > 0 and preset.downscale_factor[0] <= 0.34
    image = cv2.resize(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8),
                       (96, 96), interpolation=cv2.INTER_CUBIC)
    changed = [not np.array_equal(augment_image(image, seed), image) for seed in range(10)]
    assert sum(changed) >= 8


def augment_image(image, seed):
    from core.training.augment import augment

    return augment(image, np.random.default_rng(seed), AUGMENT_PRESETS["everyday"])


def test_select_last_keeps_the_last_epoch_and_sbi_only_leaves_real_fakes_out(faces_dir, tmp_path):
    out = tmp_path / "last.keras"
    code = cli.main(["train", *TINY, "--faces", str(faces_dir), "--out", str(out),
                     "--run-dir", str(tmp_path / "run"), "--epochs", "2", "--patience", "1",
                     "--select", "last", "--fakes", "sbi", "--sbi-fraction", "0.5",
                     "--balance", "dataset", "--augment", "everyday"])
    assert code == 0
    card = json.loads(out.with_suffix(".json").read_text())
    recipe = card["training"]["recipe"]
    # Patience 1 would stop an epoch-chosen run after a worse epoch; "last" runs every epoch.
    assert recipe["epochs_run"] == 2 and recipe["best_epoch"] == 2
    assert recipe["epoch_chosen_by"].startswith("none: the last epoch")
    assert recipe["fakes"].startswith("SBI fakes only")
    assert recipe["sampling"].startswith("tempered over datasets")
    assert recipe["augmentation"]["preset"] == "everyday"
    # Only the two real training clips' faces (4 each) remain.
    assert card["training"]["data"]["train_faces"] == 4
    assert load_classifier(out).predict(np.zeros((1, 64, 64, 3))).shape == (1,)


def test_sbi_only_needs_sbi_fakes():
    with pytest.raises(ValueError, match="SBI fakes only"):
        TrainConfig(backbone="vgg16", faces="f", out="o", run_dir="r", fakes="sbi",
                    sbi_fraction=0.0)


def test_a_fake_share_needs_a_drawn_mixture():
    with pytest.raises(ValueError, match="needs --epoch-faces"):
        TrainConfig(backbone="vgg16", faces="f", out="o", run_dir="r", fake_share=0.2)
    with pytest.raises(ValueError, match="fake share"):
        TrainConfig(backbone="vgg16", faces="f", out="o", run_dir="r", fake_share=0.0,
                    epoch_faces=16)
    assert TrainConfig(backbone="vgg16", faces="f", out="o", run_dir="r", fake_share=0.2,
                       epoch_faces=16).fake_share == 0.2


def test_init_starts_from_a_trained_models_weights(budget_run, faces_dir, tmp_path, capsys):
    from core.models.model_store import load_checked_model
    from core.training.train import TrainConfig, _compiled_model

    trained, _ = budget_run
    config = TrainConfig(backbone="vgg16", faces=str(faces_dir), out="o", run_dir="r",
                         depth="block2_pool", input_size=64, init=str(trained))
    started = _compiled_model(config, None, steps=1)
    source, _ = load_checked_model(trained)
    for mine, theirs in zip(started.get_weights(), source.get_weights()):
        np.testing.assert_array_equal(mine, theirs)

    out = tmp_path / "further.keras"
    assert cli.main(["train", *TINY, "--faces", str(faces_dir), "--out", str(out),
                     "--run-dir", str(tmp_path / "run"), "--epochs", "1",
                     "--init", str(trained)]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    first = json.loads(trained.with_suffix(".json").read_text())
    assert card["training"]["started_from"]["sha256"] == first["sha256"]
    # The whole chain: how the model it started from was itself trained.
    assert card["training"]["started_from"]["training"] == first["training"]
    # A deeper cut of the same family has layers the trained one lacks: one line, no traceback.
    code = cli.main(["train", "--backbone", "vgg16", "--depth", "block3_pool", "--input-size", "64",
                     "--batch", "8", "--no-progress", "--faces", str(faces_dir),
                     "--out", str(tmp_path / "other.keras"), "--run-dir", str(tmp_path / "run2"),
                     "--epochs", "1", "--init", str(trained)])
    assert code == 2
    assert "different architecture" in capsys.readouterr().err


def test_a_shallower_cut_takes_every_layer_it_shares_with_the_deeper_one(tmp_path):
    """InceptionV3 names most of its layers conv2d_N with a process-wide counter, so the saved
    names (from the first build in this process) and the new build's differ; the features at
    the shallower cut must still come out identical, and the head must start fresh."""
    import keras

    from core.models.backbones import HEAD_LAYER, build_classifier
    from core.models.model_store import save_model
    from core.training.train import TrainConfig, _compiled_model

    keras.utils.set_random_seed(3)
    deeper = build_classifier("inceptionv3", depth="mixed1", input_size=75)
    deeper_path = tmp_path / "inceptionv3_mixed1_75.keras"
    save_model(deeper, deeper_path, threshold=0.5, temperature=1.0, metrics={}, training={})
    build_classifier("inceptionv3", depth="mixed0", input_size=75)  # moves the name counter on
    config = TrainConfig(backbone="inceptionv3", faces="f", out="o", run_dir="r", depth="mixed0",
                         input_size=75, init=str(deeper_path))
    started = _compiled_model(config, None, steps=1)

    def first_conv(model):
        return next(layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D))

    assert first_conv(started) != first_conv(deeper)  # the case the name keys are for
    faces = np.random.default_rng(0).uniform(0, 255, (2, 75, 75, 3)).astype("float32")
    np.testing.assert_array_equal(
        np.asarray(keras.Model(started.input, started.get_layer("mixed0").output)(faces)),
        np.asarray(keras.Model(deeper.input, deeper.get_layer("mixed0").output)(faces)))
    assert started.get_layer(HEAD_LAYER).get_weights()[0].shape != \
        deeper.get_layer(HEAD_LAYER).get_weights()[0].shape


# --- a teacher's P(fake) computed once ---------------------------------------------------------

def test_cached_teacher_p_is_mixed_into_the_target_except_on_self_blended_fakes(faces_dir):
    from core.training.train import _py_dataset_class

    faces = load_faces(read_index(faces_dir), 80)
    faces.soft = np.full(len(faces), 0.2, dtype=np.float32)
    seen = {}
    for sbi in (0.0, 1.0):
        batches = _py_dataset_class()(faces, 48, len(faces), sbi_fraction=sbi, augmentation=None,
                                      class_weight=None, seed=0, workers=1, soft_weight=0.5)
        _, target = batches[0]
        labels = faces.labels[batches._order[:len(faces)]]
        seen[sbi] = {label: set(np.round(target[labels == label].astype(float), 4).tolist())
                     for label in (0, 1)}
    # Fakes: 0.5 * 0.2 + 0.5 * 1; reals left real: 0.5 * 0.2; reals made SBI fakes: 1.
    assert seen == {0.0: {0: {0.1}, 1: {0.6}}, 1.0: {0: {1.0}, 1: {0.6}}}


def test_teacher_cache_scores_each_face_once_continues_and_trains_a_student(
        faces_dir, teacher_path, tmp_path, capsys):
    from core.training.teacher_cache import read_teacher_cache

    cache = tmp_path / "teacher.csv"
    args = ["teacher-cache", str(faces_dir), "--teacher", str(teacher_path), "--out", str(cache),
            "--no-progress"]
    assert cli.main([*args, "--limit", "5"]) == 0
    header, scores = read_teacher_cache(cache)
    assert len(scores) == 5 and header["teacher"] == "teacher"
    np.testing.assert_allclose(list(scores.values()), 0.8, atol=1e-4)
    assert cli.main(args) == 0                  # continues: the 3 train faces left
    assert "8 of 8 train faces scored by teacher" in capsys.readouterr().out
    assert len(read_teacher_cache(cache)[1]) == 8
    assert len(cache.read_text().splitlines()) == 9      # a header and each face once

    out = tmp_path / "student.keras"
    code = cli.main(["train", *TINY, "--faces", str(faces_dir), "--out", str(out),
                     "--run-dir", str(tmp_path / "run"), "--epochs", "1",
                     "--teacher-cache", str(cache), "--distill-weight", "0.7"])
    assert code == 0
    distillation = json.loads(out.with_suffix(".json").read_text())["training"]["distillation"]
    assert distillation["teacher"] == "teacher" and distillation["weight"] == 0.7
    assert distillation["faces_with_teacher_p"] == 8 and distillation["train_faces"] == 8
    from core.models.model_store import file_sha256
    assert distillation["cache_sha256"] == file_sha256(cache)


def test_a_teacher_cache_must_match_the_run(faces_dir, teacher_path, tmp_path, capsys):
    cache = tmp_path / "teacher.csv"
    assert cli.main(["teacher-cache", str(faces_dir), "--teacher", str(teacher_path), "--out",
                     str(cache), "--framing", "0.6", "--no-progress"]) == 0
    code = cli.main(["train", *TINY, "--faces", str(faces_dir), "--out", str(tmp_path / "s.keras"),
                     "--run-dir", str(tmp_path / "run"), "--teacher-cache", str(cache)])
    assert code == 2 and "framing 0.6" in capsys.readouterr().err
    code = cli.main(["teacher-cache", str(faces_dir), "--teacher", str(teacher_path), "--out",
                     str(cache), "--no-progress"])        # the same file at another framing
    assert code == 2 and "choose another --out" in capsys.readouterr().err
    code = cli.main(["train", *TINY, "--faces", str(faces_dir), "--out", str(tmp_path / "s.keras"),
                     "--run-dir", str(tmp_path / "run2"), "--teacher-cache", str(cache),
                     "--teacher", str(teacher_path)])
    assert code == 2 and "not both" in capsys.readouterr().err


def test_an_ensemble_teacher_scores_each_face_and_its_views_as_the_pipeline_mixes_them(
        faces_dir, tmp_path, capsys):
    """The default verdict as a teacher: each member's raw P averaged over the face, its mirror
    and its JPEG re-encode, calibrated by the member's card, mixed and calibrated by the
    ensemble card; a cache of other views or of a changed member is refused."""
    from core.models.model_store import load_classifier
    from core.training.faceindex import load_face, read_face_indexes
    from core.training.teacher_cache import read_teacher_cache
    from core.verdicts.calibration import calibrated
    from core.verdicts.ensemble import EnsembleCard
    from core.verdicts.views import view_batch
    from tests.conftest import make_tiny_model

    folder = tmp_path / "zoo"
    folder.mkdir()
    cards = [make_tiny_model(folder, "resnet50", name="a", threshold=0.45, temperature=1.5, seed=1),
             make_tiny_model(folder, "inceptionv3", name="b", threshold=0.55, temperature=0.8,
                             seed=2)]
    ensemble = EnsembleCard(weights={"a": 0.75, "b": 0.25}, threshold=0.52, temperature=2.0,
                            member_sha256={c.name: c.sha256 for c in cards})
    card_path = ensemble.save(folder / "ensemble.json")

    def cache_of(teacher, views, name):
        out = tmp_path / f"{name}.csv"
        assert cli.main(["teacher-cache", str(faces_dir), "--teacher", str(teacher), "--out",
                         str(out), "--views", views, "--no-progress"]) == 0
        return read_teacher_cache(out)

    header, mixed = cache_of(card_path, "flip,jpeg", "ensemble")
    assert header["teacher"] == "ensemble (a × 0.75, b × 0.25)" and header["views"] == ["flip", "jpeg"]
    assert header["members"] == {c.name: c.sha256 for c in cards} and len(mixed) == 8
    members = {c.name: cache_of(folder / f"{c.name}.keras", "flip,jpeg", c.name)[1] for c in cards}
    for face, p in mixed.items():
        assert p == pytest.approx(ensemble.face_score({n: s[face] for n, s in members.items()}),
                                  abs=2e-5)

    # One member's P of one face, computed by hand: the mean raw P of three views, calibrated.
    row = next(r for r in read_face_indexes([faces_dir]) if r["split"] == "train")
    classifier = load_classifier(folder / "a.keras")
    crop = load_face(row, classifier.input_size, 1.0)[0][None]
    raw = np.mean([classifier.predict(v)[0] for v in
                   (crop, view_batch(crop, "flip"), view_batch(crop, "jpeg"))])
    assert members["a"][row["file"]] == pytest.approx(float(calibrated(raw, 0.45, 1.5)), abs=2e-5)
    _, plain = cache_of(folder / "a.keras", "none", "a_plain")
    assert any(abs(plain[f] - members["a"][f]) > 1e-4 for f in plain)     # the views count

    code = cli.main(["teacher-cache", str(faces_dir), "--teacher", str(card_path), "--out",
                     str(tmp_path / "ensemble.csv"), "--no-progress"])    # the same file, no views
    assert code == 2 and "choose another --out" in capsys.readouterr().err
    make_tiny_model(folder, "resnet50", name="a", seed=7)                 # a member retrained
    code = cli.main(["teacher-cache", str(faces_dir), "--teacher", str(card_path), "--out",
                     str(tmp_path / "stale.csv"), "--no-progress"])
    assert code == 2 and "stale: a changed" in capsys.readouterr().err
