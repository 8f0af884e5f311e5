"""core.models.model_store: real .keras files, cards, checksums and the locked predict function."""
from __future__ import annotations

import json
import os
import re
import shutil
import threading

import numpy as np
import pytest

import keras

from core.errors import ChecksumMismatchError, ModelError, ModelNotFoundError
from core.models.backbones import build_classifier
from core.models.model_store import (Classifier, ModelCard, discover_models, file_sha256,
                                     load_classifier, save_model, update_card)

SIZE = 48


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("store")
    keras.utils.set_random_seed(7)
    model = build_classifier("resnet50", depth="conv2_block1_out", input_size=SIZE)
    card = save_model(model, folder / "tiny.keras", training={"data": "none"}, notes="test")
    return folder, model, card


def _crops(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


def test_card_describes_the_saved_file(saved):
    folder, model, card = saved
    path = folder / "tiny.keras"
    on_disk = json.loads((folder / "tiny.json").read_text())
    assert on_disk == card.to_dict()
    assert card.name == "tiny" and card.file == "tiny.keras"
    assert card.sha256 == file_sha256(path) and card.size_bytes == path.stat().st_size
    assert card.params == model.count_params()
    assert (card.backbone, card.depth, card.input_size) == ("resnet50", "conv2_block1_out", SIZE)
    assert card.preprocessing == "caffe"
    assert (card.threshold, card.temperature, card.metrics) == (0.5, 1.0, {})
    assert card.created and card.keras_version == keras.__version__
    assert ModelCard.load(folder / "tiny.json") == card
    # No temp file is left beside the model.
    assert sorted(p.name for p in folder.iterdir()) == ["tiny.json", "tiny.keras"]


def test_round_trip_predictions_are_identical(saved):
    folder, model, _ = saved
    classifier = load_classifier(folder / "tiny.json")
    assert isinstance(classifier, Classifier)
    assert classifier.name == "tiny" and classifier.input_size == SIZE
    crops = _crops(5)
    expected = np.asarray(model(crops.astype(np.float32), training=False)).reshape(-1)
    got = classifier.predict(crops)
    assert got.dtype == np.float64 and got.shape == (5,)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert np.ptp(got) > 0
    # float input in [0, 255] gives the same answer as uint8.
    np.testing.assert_allclose(classifier.predict(crops.astype(np.float32)), got, atol=1e-7)
    # Loading by the .keras path or by the card object gives the same model.
    np.testing.assert_array_equal(load_classifier(folder / "tiny.keras").predict(crops), got)


def test_predict_batches_beyond_32_and_handles_empty(saved):
    folder, _, _ = saved
    classifier = load_classifier(folder / "tiny.json")
    crops = _crops(70, seed=1)
    whole = classifier.predict(crops)
    parts = np.concatenate([classifier.predict(crops[i:i + 7]) for i in range(0, 70, 7)])
    np.testing.assert_allclose(whole, parts, atol=1e-6)
    empty = classifier.predict(np.zeros((0, SIZE, SIZE, 3), np.uint8))
    assert empty.shape == (0,) and empty.dtype == np.float64


def test_predict_refuses_the_wrong_size(saved):
    folder, _, _ = saved
    classifier = load_classifier(folder / "tiny.json")
    with pytest.raises(ValueError, match=f"{SIZE} x {SIZE} x 3"):
        classifier.predict(np.zeros((2, SIZE + 1, SIZE + 1, 3), np.uint8))
    with pytest.raises(ValueError):
        classifier.predict(np.zeros((SIZE, SIZE, 3), np.uint8))


def test_concurrent_predict_matches_serial(saved):
    folder, _, _ = saved
    classifier = load_classifier(folder / "tiny.json")
    inputs = [_crops(9, seed=s) for s in range(4)]
    serial = [classifier.predict(x) for x in inputs]
    results = [None] * 4

    def work(i):
        for _ in range(3):
            results[i] = classifier.predict(inputs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, serial):
        np.testing.assert_array_equal(got, want)


def test_tampered_file_raises_checksum_mismatch(saved, tmp_path):
    folder, _, _ = saved
    for name in ("tiny.keras", "tiny.json"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    with open(tmp_path / "tiny.keras", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ChecksumMismatchError) as info:
        load_classifier(tmp_path / "tiny.json")
    assert "tiny.keras" in str(info.value) and "\n" not in str(info.value)


def test_missing_files_raise_model_not_found(saved, tmp_path):
    folder, _, _ = saved
    with pytest.raises(ModelNotFoundError):
        load_classifier(tmp_path / "absent.json")
    (tmp_path / "tiny.json").write_bytes((folder / "tiny.json").read_bytes())
    with pytest.raises(ModelNotFoundError, match="tiny.keras"):
        load_classifier(tmp_path / "tiny.json")
    (tmp_path / "lonely.keras").write_bytes((folder / "tiny.keras").read_bytes())
    with pytest.raises(ModelNotFoundError, match="card"):
        load_classifier(tmp_path / "lonely.keras")


def test_safe_mode_load_needs_no_unsafe_deserialisation(saved):
    folder, model, _ = saved
    loaded = keras.models.load_model(folder / "tiny.keras", safe_mode=True, compile=False)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]


def test_update_card_keeps_the_model_file_and_its_checksum(saved, tmp_path):
    folder, _, card = saved
    for name in ("tiny.keras", "tiny.json"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    updated = update_card(tmp_path / "tiny.json", threshold=0.62, temperature=1.7,
                          metrics={"val_video_auc": 0.81})
    reread = ModelCard.load(tmp_path / "tiny.json")
    assert reread == updated
    assert (reread.threshold, reread.temperature, reread.metrics) == (0.62, 1.7, {"val_video_auc": 0.81})
    assert reread.sha256 == card.sha256 == file_sha256(tmp_path / "tiny.keras")
    assert load_classifier(tmp_path / "tiny.json").card.threshold == 0.62
    with pytest.raises(ValueError):
        update_card(tmp_path / "tiny.json", threshold=1.5)


def test_save_model_refuses_a_name_unlike_its_file_and_computed_fields(saved, tmp_path):
    _, model, _ = saved
    with pytest.raises(ValueError, match="other"):
        save_model(model, tmp_path / "tiny.keras", name="other")
    with pytest.raises(ValueError, match="sha256"):
        save_model(model, tmp_path / "tiny.keras", sha256="0" * 64)
    with pytest.raises(ValueError, match="input_size"):
        save_model(model, tmp_path / "tiny.keras", input_size=SIZE * 2)
    assert list(tmp_path.iterdir()) == []


def test_discover_models_lists_cards_with_their_files(saved, tmp_path):
    folder, _, _ = saved
    assert discover_models(folder) == [folder / "tiny.json"]
    assert discover_models(tmp_path / "nowhere") == []
    for name in ("tiny.keras", "tiny.json"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    (tmp_path / "b_orphan.json").write_text(json.dumps({**ModelCard.load(folder / "tiny.json").to_dict(),
                                                        "name": "b_orphan", "file": "b_orphan.keras"}))
    (tmp_path / "a_notes.json").write_text("[1, 2]")
    (tmp_path / "c_broken.json").write_text("{")
    assert discover_models(tmp_path) == [tmp_path / "tiny.json"]


@pytest.mark.parametrize("field, value, message", [
    ("input_size", 0, "input_size 0"),
    ("input_size", 10**9, "input_size"),
    ("input_size", "224", "input_size"),
    ("threshold", 7, "threshold 7"),
    ("threshold", float("nan"), "threshold"),
    ("temperature", 0, "temperature 0"),
    ("file", "../../etc/passwd", "file '../../etc/passwd'"),
    ("file", "model.pkl", "must be a .keras file name"),
    ("sha256", "abc", "sha256"),
    ("name", "../evil", "name"),
    ("metrics", [], "metrics and training"),
])
def test_cards_with_absurd_fields_are_refused_and_left_out_of_the_zoo(saved, tmp_path, field,
                                                                      value, message):
    from core.models.zoo import available_models, refused_cards

    source, _, card = saved
    model_path = source / "tiny.keras"
    folder = tmp_path / "zoo"
    folder.mkdir()
    shutil.copy2(model_path, folder / model_path.name)
    data = card.to_dict()
    data[field] = value
    card_path = folder / f"{card.name}.json"
    card_path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match=re.escape(message)):
        load_classifier(card_path)
    assert available_models(folder) == {}
    [(name, reason)] = refused_cards(folder)
    assert name == card_path.name and message in reason


def test_litert_runs_the_model_with_tensorflow_s_answers(saved):
    folder, _, _ = saved
    on_litert = load_classifier(folder / "tiny.json")
    on_tensorflow = load_classifier(folder / "tiny.json", runtime="tensorflow")
    assert (on_litert.runtime, on_tensorflow.runtime) == ("litert", "tensorflow")
    assert "litert" in repr(on_litert)
    # Sizes off the padded buckets, one across two predict batches.
    for n, seed in ((1, 3), (3, 4), (32, 5), (45, 6)):
        crops = _crops(n, seed=seed)
        got = on_litert.predict(crops)
        assert got.shape == (n,) and got.dtype == np.float64
        np.testing.assert_allclose(got, on_tensorflow.predict(crops), rtol=0, atol=1e-6)
    # A face's score does not depend on the faces padded in beside it.
    crops = _crops(5, seed=8)
    np.testing.assert_allclose(on_litert.predict(crops)[:1], on_litert.predict(crops[:1]), atol=1e-7)


def test_without_litert_the_classifier_keeps_tensorflow(saved, monkeypatch, caplog):
    from core import litert_runtime

    def missing():
        raise litert_runtime.LiteRTUnavailable("ai-edge-litert is not installed (test)")

    monkeypatch.setattr(litert_runtime, "_interpreter_class", missing)
    folder, model, _ = saved
    with caplog.at_level("WARNING"):
        classifier = load_classifier(folder / "tiny.json")
    assert classifier.runtime == "tensorflow"
    assert "runs on TensorFlow" in caplog.text and "not installed" in caplog.text
    crops = _crops(4, seed=9)
    expected = np.asarray(model(crops.astype(np.float32), training=False)).reshape(-1)
    np.testing.assert_allclose(classifier.predict(crops), expected, atol=1e-6)


def test_an_unknown_runtime_is_refused(saved):
    folder, _, _ = saved
    with pytest.raises(ValueError, match="runtime must be one of litert, tensorflow"):
        load_classifier(folder / "tiny.json", runtime="onnx")


def test_a_litert_program_that_disagrees_with_tensorflow_is_not_used(saved, monkeypatch, caplog):
    from core import litert_runtime

    real_run = litert_runtime.InterpreterPool.run
    monkeypatch.setattr(litert_runtime.InterpreterPool, "run",
                        lambda pool, x: [out + 0.01 for out in real_run(pool, x)])
    folder, _, _ = saved
    with caplog.at_level("WARNING"):
        classifier = load_classifier(folder / "tiny.json")
    assert classifier.runtime == "tensorflow"
    assert "does not give TensorFlow's outputs" in caplog.text


def test_litert_batches_are_padded_up_to_a_bucket_and_no_further(saved):
    from core import litert_runtime

    folder, model, _ = saved
    pool = litert_runtime.checked_pool(load_classifier(folder / "tiny.json")._predict_fn,
                                       _crops(2).astype(np.float32))
    crops = _crops(5, seed=10).astype(np.float32)
    (got,) = litert_runtime.bucketed(pool, crops)
    assert got.shape == (5, 1)
    np.testing.assert_allclose(got, np.asarray(model(crops, training=False)), atol=1e-6)
    assert sorted(shape[0] for shape in pool._by_shape) == [2, 8]
    for n in (0, 33):
        with pytest.raises(ValueError, match="expected 1-32 items"):
            litert_runtime.bucketed(pool, np.zeros((n, SIZE, SIZE, 3), np.float32))


def test_litert_takes_the_thread_limit_a_worker_sets(saved, monkeypatch):
    from core import litert_runtime, threads

    monkeypatch.setattr(threads, "_intra_limit", 1)
    folder, _, _ = saved
    pool = litert_runtime.checked_pool(load_classifier(folder / "tiny.json")._predict_fn,
                                       _crops(2).astype(np.float32))
    assert pool._threads == 1
    monkeypatch.setattr(threads, "_intra_limit", None)
    assert threads.compute_threads() >= 1


def test_a_model_s_litert_program_is_cached_and_checked_when_read(saved, monkeypatch):
    from core import litert_runtime

    folder, _, card = saved
    load_classifier(folder / "tiny.json")
    cached = litert_runtime.cached_program_path(card.sha256)
    assert cached.is_file() and cached.stat().st_size > 0
    assert str(cached).startswith(os.environ["DEEPFAKE_CACHE"])

    def no_converter(traced_fn):
        raise AssertionError("converted again")

    monkeypatch.setattr(litert_runtime, "convert", no_converter)
    crops = _crops(3, seed=11)
    again = load_classifier(folder / "tiny.json")          # read from the cache, not converted
    assert again.runtime == "litert"
    expected = load_classifier(folder / "tiny.json", runtime="tensorflow").predict(crops)
    np.testing.assert_allclose(again.predict(crops), expected, atol=1e-6)

    monkeypatch.undo()
    for damage in (b"not a flatbuffer", cached.read_bytes()[:1000]):
        cached.write_bytes(damage)                          # damaged: converted and rewritten
        repaired = load_classifier(folder / "tiny.json")
        assert repaired.runtime == "litert"
        np.testing.assert_allclose(repaired.predict(crops), expected, atol=1e-6)
        assert cached.stat().st_size > 1000
