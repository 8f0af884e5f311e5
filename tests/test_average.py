"""`python -m core average`: fine-tunes of one network averaged into one model (a model soup),
calibrated on val faces and carded with its members; other networks refused with a message."""
import csv

import numpy as np
import pytest

from core import cli
from core.models.model_store import load_checked_model
from core.models.zoo import training_seconds
from core.training.average import averaged_weights, parse_weights
from core.training.extract import ExtractSettings
from core.training.train import load_faces
from core.training.faceindex import read_face_index
from tests.conftest import make_tiny_model
from tests.fixtures import extract_clip_faces


@pytest.fixture(scope="module")
def faces_dir(tmp_path_factory):
    clips = [{"name": name, "label": label, "split": split, "size": (320, 240)}
             for name, label, split in (("r1", "REAL", "train"), ("f1", "FAKE", "train"),
                                        ("r2", "REAL", "val"), ("f2", "FAKE", "val"),
                                        ("r3", "REAL", "val"), ("f3", "FAKE", "val"))]
    out = tmp_path_factory.mktemp("faces")
    report = extract_clip_faces(tmp_path_factory.mktemp("clips"), out, clips,
                                ExtractSettings(real_faces=3, fake_faces=3, frames=4, crop_size=96),
                                frames=8)
    assert report.faces == 18 and not report.failed
    return out


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    folder = tmp_path_factory.mktemp("members")
    return [make_tiny_model(folder, "resnet50", name=f"m{seed}", seed=seed) for seed in (1, 2)]


def test_the_average_is_the_weighted_mean_of_its_members_calibrated_and_carded(
        members, faces_dir, tmp_path, capsys):
    a, b = members
    out = tmp_path / "soup" / "tiny_soup.keras"
    code = cli.main(["average", str(a.card_path), str(b.card_path), "--weights", "1,3",
                     "--faces", str(faces_dir), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert "val video AUC" in capsys.readouterr().out
    model, card = load_checked_model(out.with_suffix(".json"))
    (model_a, _), (model_b, _) = load_checked_model(a.card_path), load_checked_model(b.card_path)
    mixed = [0.25 * wa + 0.75 * wb for wa, wb in zip(model_a.get_weights(), model_b.get_weights())]
    assert any(not np.allclose(wa, wb) for wa, wb in zip(model_a.get_weights(),
                                                         model_b.get_weights()))
    for got, want in zip(model.get_weights(), mixed):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    members_record = card.training["members"]
    assert [(m["model"], m["sha256"], m["share"]) for m in members_record] == [
        ("m1", a.sha256, 0.25), ("m2", b.sha256, 0.75)]
    assert (card.backbone, card.depth, card.input_size) == ("resnet50", a.depth, a.input_size)
    assert set(card.metrics["member_val_video_auc"]) == {"m1", "m2"}
    assert card.training["data"]["val_faces"] == 12 and card.training["data"]["val_videos"] == 4
    # Calibrated on the 4 val clips as train calibrates: the threshold is where the video means of
    # the face P split them best, not the untrained members' 0.5.
    assert 0 < card.threshold < 1 and card.threshold != 0.5 and card.temperature > 0
    assert card.training["command"].startswith("python -m core average")
    # The zoo table's training time of an average is its own plus what its members took.
    record = {**card.training, "members": [{**m, "training": {"wall_seconds": 600.0}}
                                           for m in members_record]}
    assert training_seconds(record) == card.training["wall_seconds"] + 1200.0


def test_a_model_averaged_with_itself_scores_every_face_as_it_does(members, faces_dir, tmp_path):
    a, _ = members
    out = tmp_path / "self.keras"
    assert cli.main(["average", str(a.card_path), str(a.card_path), "--faces", str(faces_dir),
                     "--out", str(out)]) == 0
    rows = [r for r in read_face_index(faces_dir) if r["split"] == "val"]
    faces = np.stack(load_faces(rows, a.input_size).images).astype(np.float32)
    (original, _), (averaged, _) = load_checked_model(a.card_path), load_checked_model(out)
    np.testing.assert_allclose(averaged.predict(faces, verbose=0),
                               original.predict(faces, verbose=0), rtol=1e-5, atol=1e-6)


def test_other_networks_and_faces_without_val_rows_are_refused(members, faces_dir, tmp_path,
                                                               capsys):
    a, _ = members
    other = make_tiny_model(tmp_path, "vgg16", name="other")
    out = tmp_path / "refused.keras"
    assert cli.main(["average", str(a.card_path), str(other.card_path), "--faces",
                     str(faces_dir), "--out", str(out)]) == 2
    assert "only fine-tunes of one network can be averaged" in capsys.readouterr().err
    assert not out.exists()

    with (faces_dir / "index.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    train_only = faces_dir / "train_only.csv"
    with train_only.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if r["split"] == "train")
    assert cli.main(["average", str(a.card_path), str(a.card_path), "--faces", str(train_only),
                     "--out", str(out)]) == 2
    assert "no split == 'val' rows" in capsys.readouterr().err and not out.exists()
    assert cli.main(["average", str(a.card_path), "--faces", str(faces_dir), "--out",
                     str(out)]) == 2
    assert "at least two models" in capsys.readouterr().err


def test_weights_are_normalised_and_must_match_the_models():
    assert parse_weights(None, 4) == [0.25] * 4
    assert parse_weights("1,3", 2) == [0.25, 0.75]
    for bad, count in (("1,x", 2), ("1,2,3", 2), ("-1,2", 2), ("0,0", 2)):
        with pytest.raises(ValueError):
            parse_weights(bad, count)
    with pytest.raises(ValueError, match="same variables"):
        averaged_weights([[np.zeros(2)], [np.zeros(3)]], [0.5, 0.5])
