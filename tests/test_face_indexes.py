"""Training on more than one face index: a folder `extract` cut from clips at the pipeline's
framing beside a CSV of tighter crops made elsewhere (the columns of dfdc_faces/index.csv), their
framing measured with the real MTCNN, keypoints added for self-blending, the mixture sampled per
epoch, and a model whose first layer cuts the pipeline's crop to the tighter framing."""
import csv
import json
import math

import cv2
import numpy as np
import pytest
import skimage.data

from core import cli
from core.faces.detector import square_crop
from core.models.backbones import FRAMING_LAYER, build_classifier, framed_input_size, input_window
from core.models.model_store import load_classifier, save_model
from core.models.zoo import fitted_ensemble, resolve_selection
from core.training.crop_metrics import evaluate_crops, model_input
from core.training.extract import ExtractSettings
from core.training.faceindex import read_face_index, read_face_indexes
from core.training.framing import framing_report, write_landmarks
from core.training.train import (FaceFiles, TrainConfig, capped_shares, load_face, load_faces,
                                 mixture_weights, progress_line)
from core.verdicts.ensemble import ENSEMBLE_CARD, EnsembleCard
from tests.fixtures import extract_clip_faces

# The astronaut's face box in skimage's photo, as MTCNN reports it (tests/fixtures.py).
FACE_BOX = (182, 64, 265, 171)
TINY = ["--backbone", "vgg16", "--depth", "block2_pool", "--input-size", "64", "--batch", "8",
        "--lr", "1e-4", "--no-progress"]


def tight_crop(shift: int = 0, side_share: float = 0.95, size: int = 112) -> np.ndarray:
    """A crop cut as the DFDC face set cuts them: a square a little inside the face box."""
    photo = skimage.data.astronaut()
    x1, y1, x2, y2 = FACE_BOX
    side = int(round(max(x2 - x1, y2 - y1) * side_share))
    cx, cy = (x1 + x2) // 2 + shift, (y1 + y2) // 2
    crop = photo[cy - side // 2:cy - side // 2 + side, cx - side // 2:cx - side // 2 + side]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def write_index(folder, rows, crops) -> "Path":
    (folder / "faces").mkdir(parents=True, exist_ok=True)
    for row, crop in zip(rows, crops):
        cv2.imwrite(str(folder / row["file"]), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 85])
    index = folder / "index.csv"
    with index.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "label", "group", "split", "dataset",
                                                    "method", "source_width", "source_height"])
        writer.writeheader()
        writer.writerows(rows)
    return index


@pytest.fixture(scope="module")
def foreign_index(tmp_path_factory):
    """Eight tight crops, REAL and FAKE, train and val, in the DFDC face set's layout."""
    folder = tmp_path_factory.mktemp("foreign")
    rows, crops = [], []
    for k in range(8):
        label = "REAL" if k % 2 == 0 else "FAKE"
        rows.append({"file": f"faces/crop{k}.jpg", "label": label, "group": f"dfdc_src{k // 2}",
                     "split": "val" if k >= 6 else "train", "dataset": "DFDC",
                     "method": "original" if label == "REAL" else "dfdc",
                     "source_width": 100, "source_height": 100})
        crop = tight_crop(shift=(k % 3) - 1)
        if label == "FAKE":     # something for a model to find: a brighter, smoother face
            crop = cv2.GaussianBlur(np.clip(crop.astype(np.int16) + 25, 0, 255).astype(np.uint8),
                                    (0, 0), 1.5)
        crops.append(crop)
    return write_index(folder, rows, crops)


@pytest.fixture(scope="module")
def pipeline_faces(tmp_path_factory):
    """Faces cut by `extract` from generated clips: the pipeline's own framing (margin 0.2)."""
    clips = [{"name": name, "label": label, "split": split, "dataset": "FF++", "size": (320, 240)}
             for name, label, split in (("r1", "REAL", "train"), ("f1", "FAKE", "train"),
                                        ("r2", "REAL", "val"), ("f2", "FAKE", "val"))]
    out = tmp_path_factory.mktemp("faces")
    report = extract_clip_faces(tmp_path_factory.mktemp("clips"), out, clips,
                                ExtractSettings(real_faces=3, fake_faces=3, frames=4, crop_size=96),
                                frames=8)
    assert report.faces == 12 and not report.failed
    return out


def test_a_foreign_index_reads_in_the_common_form(foreign_index, pipeline_faces):
    rows = read_face_index(foreign_index)
    assert [r["label"] for r in rows] == [0, 1] * 4
    assert rows[0]["video_id"] == "crop0" and rows[0]["group"] == "dfdc_src0"
    assert rows[0]["file"] == str(foreign_index.parent / "faces" / "crop0.jpg")
    assert not rows[0]["pipeline_framing"] and math.isnan(rows[0]["left_eye_x"])
    mine = read_face_index(pipeline_faces)
    assert all(r["pipeline_framing"] and r["margin"] == pytest.approx(0.2) for r in mine)
    assert all(np.isfinite(r["left_eye_x"]) for r in mine)
    both = read_face_indexes([pipeline_faces, foreign_index])
    assert len(both) == 20 and {r["dataset"] for r in both} == {"FF++", "DFDC"}
    with pytest.raises(ValueError, match="given twice"):
        read_face_indexes([foreign_index, foreign_index])
    copy = foreign_index.with_name("copy.csv")
    copy.write_text(foreign_index.read_text())
    with pytest.raises(ValueError, match="'crop0' is in both"):
        read_face_indexes([foreign_index, copy])
    copy.unlink()


def test_bad_labels_and_missing_columns_are_named(tmp_path):
    index = tmp_path / "index.csv"
    index.write_text("file,label\na.jpg,maybe\n")
    with pytest.raises(ValueError, match="line 2: label must be REAL/FAKE"):
        read_face_index(index)
    index.write_text("path,label\na.jpg,REAL\n")
    with pytest.raises(ValueError, match="lacks the column"):
        read_face_index(index)


def test_landmarks_give_the_real_crops_their_eyes(foreign_index):
    out = write_landmarks(foreign_index, labels=(0,), progress=False)
    rows = read_face_index(foreign_index)
    for row in rows:
        if row["label"] == 1:          # only the reals were asked for
            assert math.isnan(row["left_eye_x"])
            continue
        left, right = (row["left_eye_x"], row["left_eye_y"]), (row["right_eye_x"], row["right_eye_y"])
        assert left[0] < right[0] and 15 < left[1] < 60 and 15 < right[1] < 60
        assert 20 < math.dist(left, right) < 60           # in a 112 px crop of a 100 px face
    again = write_landmarks(foreign_index, labels=(0,), progress=False)   # resumes: nothing new
    assert again == out and len(out.read_text().splitlines()) == 5


def test_framing_is_measured_on_both_kinds_of_crop(foreign_index, tmp_path):
    # A pipeline crop of the same photo: square_crop at the inference margin.
    photo = skimage.data.astronaut()
    crop = square_crop(photo, FACE_BOX, margin=0.2, size=112)
    pipeline = write_index(tmp_path, [{"file": "faces/p.jpg", "label": "REAL", "group": "g",
                                       "split": "train", "dataset": "x", "method": "original",
                                       "source_width": 1, "source_height": 1}], [crop])
    tight, wide = framing_report([foreign_index, pipeline], sample=0)
    assert tight["found"] == 8 and wide["found"] == 1
    # The box fills about 1 / 1.4 of the pipeline's crop and nearly all of the tight one.
    assert wide["box_share_q25_median_q75"][1] == pytest.approx(1 / 1.4, abs=0.08)
    assert tight["eye_share_q25_median_q75"][1] > 1.3 * wide["eye_share_q25_median_q75"][1]


def test_framing_cuts_the_pipeline_crop_and_moves_its_keypoints(pipeline_faces):
    row = read_face_index(pipeline_faces)[0]
    whole, points = load_face(row, 96)
    framed, framed_points = load_face(row, 96, framing=0.5)
    assert whole.shape == (96, 96, 3) and framed.shape == (48, 48, 3)
    assert np.array_equal(framed, whole[24:72, 24:72])
    assert np.allclose(framed_points, points - 24)
    shrunk, shrunk_points = load_face(row, 40, framing=0.5)
    assert shrunk.shape == (40, 40, 3)
    # Streaming decodes the same face and computes the same keypoints without decoding.
    streamed = load_faces([row], 40, framing=0.5, stream=True)
    assert isinstance(streamed.images, FaceFiles)
    assert np.array_equal(streamed.images[0], shrunk)
    assert np.allclose(streamed.keypoints[0], shrunk_points)


def test_foreign_crops_are_taken_whole_at_any_framing(foreign_index):
    row = read_face_index(foreign_index)[0]
    whole, _ = load_face(row, 200)
    framed, _ = load_face(row, 200, framing=0.5)
    assert np.array_equal(whole, framed) and whole.shape == (112, 112, 3)


def test_the_mixture_is_half_real_and_no_dataset_takes_over():
    labels = np.array([0] * 10_000 + [1] * 50_000 + [0] * 400 + [1] * 300 + [1] * 16)
    datasets = np.array(["DFDC"] * 60_000 + ["FF++"] * 700 + ["Wav2Lip"] * 16)
    p = mixture_weights(labels, datasets, max_dataset_share=0.6)
    assert p.sum() == pytest.approx(1.0)
    assert p[labels == 0].sum() == pytest.approx(0.5)
    share = {name: p[(datasets == name) & (labels == 1)].sum() / 0.5
             for name in ("DFDC", "FF++", "Wav2Lip")}
    assert share["DFDC"] == pytest.approx(0.6)            # sqrt would give it 0.9; capped
    # What DFDC lost went to the others in proportion to the square roots of their sizes.
    assert share["FF++"] / share["Wav2Lip"] == pytest.approx(math.sqrt(300 / 16))
    # Within a dataset every face alike.
    assert np.ptp(p[(datasets == "DFDC") & (labels == 1)]) == 0
    assert capped_shares(np.array([1.0, 1.0]), 0.3).tolist() == [0.5, 0.5]   # cap impossible
    # A smaller fake share draws fewer real fakes and keeps the datasets' shares within it.
    q = mixture_weights(labels, datasets, max_dataset_share=0.6, fake_share=0.15)
    assert q[labels == 1].sum() == pytest.approx(0.15)
    assert q[(datasets == "DFDC") & (labels == 1)].sum() == pytest.approx(0.15 * 0.6)
    assert q[labels == 0].sum() == pytest.approx(0.85)


def test_progress_line_says_speed_and_time_left():
    line = progress_line(10, 2, 50, 100, 16.0, 100.0, 600.0, None, {"loss": 0.5})
    assert line.startswith("epoch 3/10 step 50/100: loss 0.5000, 16.0 faces/s")
    # 50 steps left of this epoch and 7 more epochs, at 2 s a step.
    assert line.endswith(f"{(50 + 700) * 2 / 60:.1f} min left")
    budget = progress_line(10, 2, 50, 100, 16.0, 100.0, 600.0, 12.0, None)
    assert budget.endswith("2.0 min left")                 # the budget ends first


def test_a_framed_classifier_sees_the_centre_of_its_input(tmp_path):
    inner = build_classifier("vgg16", depth="block2_pool", input_size=64)
    framed = build_classifier("vgg16", depth="block2_pool", input_size=64, framing=0.5)
    assert framed_input_size(64, 0.5) == 128 and framed.input_shape == (None, 128, 128, 3)
    assert framed.get_layer(FRAMING_LAYER).cropping == ((32, 32), (32, 32))
    framed.set_weights(inner.get_weights())                # the crop layer adds no weights
    card = save_model(framed, tmp_path / "framed.keras", threshold=0.5, temperature=1.0,
                      metrics={}, training={})
    loaded = load_classifier(card.card_path)
    assert loaded.input_size == 128 and input_window(loaded.model) == (32, 64)
    image = np.random.default_rng(0).integers(0, 256, (1, 128, 128, 3)).astype(np.float32)
    centre = image[:, 32:96, 32:96]
    assert loaded.predict(image)[0] == pytest.approx(float(inner.predict(centre, verbose=0)[0, 0]),
                                                     abs=1e-5)
    # A tight crop goes exactly where the window is; the rest of the input is black.
    crop = tight_crop(size=64)
    placed = model_input(crop, 128, (32, 64))
    assert np.array_equal(placed[32:96, 32:96], crop) and placed[:32].max() == 0
    with pytest.raises(ValueError, match="framing"):
        framed_input_size(64, 0.0)


def test_train_on_a_mixture_and_evaluate_the_crops(pipeline_faces, foreign_index, tmp_path,
                                                   capsys):
    write_landmarks(foreign_index, labels=(0,), progress=False)   # SBI from its reals too
    out, run_dir = tmp_path / "zoo" / "mixed.keras", tmp_path / "run"
    code = cli.main(["train", *TINY, "--faces", str(pipeline_faces), str(foreign_index),
                     "--framing", "0.6", "--epoch-faces", "16", "--epochs", "2",
                     "--sbi-fraction", "0.3", "--augment", "everyday", "--select", "last",
                     "--out", str(out), "--run-dir", str(run_dir)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "DFDC 3 real/3 fake, FF++ 3 real/3 fake" in printed
    assert "by dataset" in printed
    card = json.loads(out.with_suffix(".json").read_text())
    training = card["training"]
    assert card["input_size"] == framed_input_size(64, 0.6) == 107
    assert training["framing"] == {"share_kept": 0.6, "model_input": 107,
                                   "how": training["framing"]["how"]}
    assert [f["index"] for f in training["data"]["faces"]] == [
        str((pipeline_faces / "index.csv").resolve()), str(foreign_index.resolve())]
    assert all(len(f["sha256"]) == 64 for f in training["data"]["faces"])
    assert training["data"]["faces"][1]["keypoints"]["sha256"]      # the landmarks file too
    assert training["data"]["sampling"] == {"faces_per_epoch": 16, "max_dataset_share": 0.5,
                                            "fake_share": 0.5}
    assert training["recipe"]["epochs_run"] == 2
    assert training["data"]["train_faces"] == 6 + 6 and training["data"]["val_faces"] == 6 + 2
    state = json.loads((run_dir / "state.json").read_text())
    # Every epoch drew 16 faces: two batches of 8.
    assert state["history"][0]["val_video_auc_by_dataset"].keys() == {"DFDC", "FF++"}

    # The same weights exported to look at the whole crop: the comparison the framing needs.
    whole_out = tmp_path / "zoo" / "mixed_whole.keras"
    assert cli.main(["train", "--resume", "--run-dir", str(run_dir), "--export-framing", "1",
                     "--out", str(whole_out), "--no-progress"]) == 0
    whole_card = json.loads(whole_out.with_suffix(".json").read_text())
    assert whole_card["input_size"] == 64 and whole_card["training"]["framing"]["share_kept"] == 1
    assert cli.main(["train", "--resume", "--run-dir", str(run_dir), "--export-framing", "1",
                     "--epochs", "3", "--out", str(whole_out), "--no-progress"]) == 2
    assert "can only be exported" in capsys.readouterr().err
    whole_out.unlink()
    whole_out.with_suffix(".json").unlink()

    [stored] = resolve_selection("mixed", out.parent)
    report = evaluate_crops(foreign_index, [stored], split="train")
    m = report["models"]["mixed"]
    assert report["crops"] == 6 and report["real"] == 3 and report["groups"] == 3
    assert m["input"] == 107 and m["backbone_sees"] == 64
    assert 0.0 <= m["auc"] <= 1.0 and len(m["auc_ci95"]) == 2 and m["log_loss"] > 0
    whole = evaluate_crops(foreign_index, [stored], split="train", whole=True)
    assert whole["models"]["mixed"]["backbone_sees"] == 107
    assert cli.main(["evaluate-crops", str(foreign_index), "--models-dir", str(out.parent),
                     "--split", "all"]) == 0
    assert "| mixed | 107 | 64 |" in capsys.readouterr().out

    # The folder's fitted ensemble scores each crop as the pipeline scores a face: its members'
    # calibrated P mixed and calibrated again; a monotone map keeps the member's AUC.
    EnsembleCard(weights={"mixed": 1.0}, threshold=0.3, temperature=2.0,
                 member_sha256={"mixed": stored.sha256}).save(out.parent / ENSEMBLE_CARD)
    fitted = evaluate_crops(foreign_index, [stored], split="train",
                            ensemble=fitted_ensemble(out.parent))
    e = fitted["models"]["ensemble"]
    assert e["auc"] == m["auc"] and e["members"] == {"mixed": 1.0}
    assert e["log_loss"] != m["log_loss"]
    assert cli.main(["evaluate-crops", str(foreign_index), "--models-dir", str(out.parent),
                     "--split", "all"]) == 0
    assert "| ensemble (mixed × 1.00) |" in capsys.readouterr().out


def test_packed_faces_read_as_the_trainer_reads_the_originals(pipeline_faces, foreign_index,
                                                             tmp_path):
    """scripts/pack_faces.py (faces for a lent GPU's small carry): the pipeline's crops stored
    already framed and shrunk, the foreign crops byte for byte, every row's label, video, group,
    split and dataset kept, and each video's faces in one part."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    out = tmp_path / "packed"
    done = subprocess.run([sys.executable, str(repo / "scripts" / "pack_faces.py"), str(out),
                           "--faces", str(pipeline_faces), str(foreign_index), "--framing", "0.58",
                           "--side", "40", "--foreign-train-per-label", "2",
                           "--foreign-val-per-label", "1", "--parts", "2"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    parts = sorted(out.glob("part*"))
    assert len(parts) == 2
    packed = read_face_indexes(parts)
    originals = {r["video_id"]: [] for r in read_face_indexes([pipeline_faces, foreign_index])}
    for row in read_face_indexes([pipeline_faces, foreign_index]):
        originals[row["video_id"]].append(row)
    foreign = [r for r in packed if r["dataset"] == "DFDC"]
    # 2 train crops of each label and 1 val crop of each: the fixture holds 3 and 1 of each
    assert sorted((r["split"], r["label"]) for r in foreign) == \
        [("train", 0), ("train", 0), ("train", 1), ("train", 1), ("val", 0), ("val", 1)]
    mine = [r for r in packed if r["dataset"] == "FF++"]
    assert len(mine) == 12 and not any(r["pipeline_framing"] for r in packed)
    for row in packed:
        source = originals[row["video_id"]]
        assert {(s["label"], s["group"], s["split"]) for s in source} == \
            {(row["label"], row["group"], row["split"])}
        assert sum(row["video_id"] in {r["video_id"] for r in read_face_index(p)}
                   for p in parts) == 1
    for row in foreign:
        original = source_row = originals[row["video_id"]][0]
        assert Path(row["file"]).read_bytes() == Path(original["file"]).read_bytes()
        assert np.array_equal(np.isnan(row_points(row)), np.isnan(row_points(source_row)))
    # A packed pipeline face is what load_face makes of the original at that framing and side.
    for row in mine:
        name = Path(row["file"]).name.split("__", 1)[1].rsplit(".", 1)[0]
        original = next(s for s in originals[row["video_id"]] if Path(s["file"]).stem == name)
        want, want_points = load_face(original, 40, 0.58)
        got, got_points = load_face(row, 40, 0.58)
        assert got.shape == want.shape == (40, 40, 3)
        assert np.abs(got.astype(int) - want.astype(int)).mean() < 3      # JPEG at quality 95
        assert np.allclose(got_points, want_points, atol=0.01)


def row_points(row) -> np.ndarray:
    return np.array([row[k] for k in row if k.endswith(("_x", "_y"))
                     and k.split("_")[0] in ("left", "right", "nose", "mouth")], dtype=float)
