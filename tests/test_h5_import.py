"""core.models.h5_import against real Keras 2 files: tf_keras writes origin-style .h5 models in a separate
process (so the two Keras versions never share one), and its own predictions are the reference."""
from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
import skimage.data
import skimage.transform

import keras

from core.errors import H5ImportError
from core.models import h5_import
from core.models.model_store import file_sha256, load_classifier

# Runs under tf_keras (Keras 2). Builds each job's origin model: keras.applications backbone with the
# origin head, random weights (BatchNorm statistics too), saved the Keras 2 way; stores tf_keras'
# own probabilities and pooled features on the job's images.
ORIGIN_WRITER = r'''
import json, sys
import numpy as np
import tf_keras as K
from tf_keras.src.applications import efficientnet as tfk_efficientnet
from tf_keras.src.engine import training as tfk_training

BUILDERS = {"resnet50": K.applications.ResNet50, "efficientnetb7": K.applications.EfficientNetB7,
            "vgg16": K.applications.VGG16, "inceptionv3": K.applications.InceptionV3,
            "inceptionresnetv2": K.applications.InceptionResNetV2}


def build_base(job, size, input_tensor=None):
    kwargs = dict(include_top=False, input_shape=(size, size, 3), input_tensor=input_tensor)
    if job["imagenet_graph"]:
        # The origin's weights="imagenet" graph (EfficientNet adds its post-Normalization scale),
        # without the download: the weights stay random.
        real = tfk_efficientnet.data_utils.get_file, tfk_training.Model.load_weights
        tfk_efficientnet.data_utils.get_file = lambda *a, **k: "unused"
        tfk_training.Model.load_weights = lambda self, *a, **k: None
        try:
            return BUILDERS[job["backbone"]](weights="imagenet", **kwargs)
        finally:
            tfk_efficientnet.data_utils.get_file, tfk_training.Model.load_weights = real
    return BUILDERS[job["backbone"]](weights=None, **kwargs)


def write(job):
    # The same random kernels on every run: unseeded, ResNet's outputs were sometimes too alike
    # across the images for the spread check.
    K.utils.set_random_seed(0)
    images = np.load(job["images"])
    size = images.shape[1]
    rng = np.random.default_rng(0)
    if job["layout"] == "functional":
        inputs = K.Input((size, size, 3))
        base = build_base(job, size, inputs)
        x = K.layers.Dropout(0.5)(K.layers.GlobalAveragePooling2D()(base.output))
        model = K.Model(inputs, K.layers.Dense(1, activation="sigmoid")(x))
    else:
        base = build_base(job, size)
        model = K.Sequential([base, K.layers.GlobalAveragePooling2D(), K.layers.Dropout(0.5),
                              K.layers.Dense(1, activation="sigmoid")])
    # Deep random nets explode or collapse; these BatchNorm gammas keep activations moderate.
    low, high = (0.6, 1.1) if job["backbone"].startswith("efficientnet") else (0.7, 1.3)
    for layer in base.layers:
        if isinstance(layer, K.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            values = [rng.uniform(low, high, n)] if layer.gamma is not None else []
            values += [rng.normal(0, 0.1, n)] if layer.beta is not None else []
            layer.set_weights(values + [rng.normal(0, 0.1, n), rng.uniform(0.5, 1.5, n)])
        elif isinstance(layer, K.layers.Normalization):
            mean, variance, count = layer.get_weights()
            layer.set_weights([rng.uniform(0.4, 0.5, mean.shape),
                               rng.uniform(0.04, 0.06, variance.shape), count])
    features = np.asarray(base(images, training=False)).mean(axis=(1, 2))
    # Head scaled to the features: probabilities away from 0 and 1, moving with every weight.
    direction = rng.normal(0, 1, (features.shape[1], 1)) / np.sqrt(features.shape[1])
    logits = features @ direction
    scale = 1.0 / (np.abs(logits).mean() + 1e-12)
    model.layers[-1].set_weights([direction * scale, np.array([0.3 - logits.mean() * scale])])
    if job["layout"] == "weights":
        model.save_weights(job["h5"])
    else:
        model.save(job["h5"])
    np.savez(job["reference"], features=features,
             probabilities=np.asarray(model(images, training=False)).reshape(-1))


for job in json.loads(sys.argv[1]):
    write(job)
'''


def _images(size: int) -> np.ndarray:
    photo = skimage.data.astronaut()
    crops = [photo[30:286, 120:376], photo[0:256, 0:256], photo[200:456, 200:456]]
    resized = [skimage.transform.resize(c, (size, size), preserve_range=True) for c in crops]
    noise = np.random.default_rng(1).uniform(0, 255, (size, size, 3))
    return np.stack(resized + [noise]).astype(np.float32)


def _write_origin_files(folder, jobs):
    images = {}
    for job in jobs:
        size = job.pop("size")
        path = folder / f"images_{size}.npy"
        if size not in images:
            images[size] = _images(size)
            np.save(path, images[size])
        job.update(images=str(path), h5=str(folder / job["h5"]),
                   reference=str(folder / job["reference"]))
    result = subprocess.run([sys.executable, "-c", ORIGIN_WRITER, json.dumps(jobs)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return images


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    folder = tmp_path_factory.mktemp("origin")
    images = _write_origin_files(folder, [
        {"backbone": "resnet50", "layout": "sequential", "imagenet_graph": False, "size": 64,
         "h5": "resnet_seq.h5", "reference": "resnet_seq.npz"},
        {"backbone": "vgg16", "layout": "weights", "imagenet_graph": False, "size": 64,
         "h5": "vgg_weights.h5", "reference": "vgg_weights.npz"},
        {"backbone": "inceptionv3", "layout": "functional", "imagenet_graph": False, "size": 75,
         "h5": "inception_fun.h5", "reference": "inception_fun.npz"},
    ])
    return folder, images


def _check_import(folder, h5_name, reference_name, backbone, images, out_dir):
    card = h5_import.import_h5(folder / h5_name, backbone, "imported", out_dir,
                               input_size=images.shape[1])
    reference = np.load(folder / reference_name)
    classifier = load_classifier(card.card_path)
    probabilities = classifier.predict(images)
    np.testing.assert_allclose(probabilities, reference["probabilities"], rtol=0, atol=1e-4)
    pooled = keras.Model(classifier.model.inputs, classifier.model.get_layer("head_pool").output)
    features = np.asarray(pooled(images))
    scale = np.abs(reference["features"]).max()
    assert np.abs(features - reference["features"]).max() <= 1e-4 * scale
    # The reference must be able to tell a good import from a bad one.
    assert 0.01 < probabilities.mean() < 0.99
    return card, probabilities


def test_sequential_full_model_h5_imports_exactly(origin, tmp_path):
    folder, images = origin
    card, probabilities = _check_import(folder, "resnet_seq.h5", "resnet_seq.npz", "resnet50",
                                        images[64], tmp_path)
    assert np.ptp(probabilities) > 0.05      # ResNet features vary with the image
    assert (card.name, card.backbone, card.depth, card.preprocessing) == (
        "imported", "resnet50", "full", "raw")
    assert card.training["source"] == "origin-project .h5 import"
    assert card.training["file"] == "resnet_seq.h5"
    assert card.training["source_sha256"] == file_sha256(folder / "resnet_seq.h5")
    assert card.training["folded_rescaling"] is None
    assert (card.threshold, card.temperature, card.metrics) == (0.5, 1.0, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imported.json", "imported.keras"]


def test_weights_only_h5_imports_exactly(origin, tmp_path):
    folder, images = origin
    with h5py.File(folder / "vgg_weights.h5") as handle:
        assert "model_weights" not in handle and "model_config" not in handle.attrs
    _check_import(folder, "vgg_weights.h5", "vgg_weights.npz", "vgg16", images[64], tmp_path)


def test_generated_layer_names_are_matched_by_creation_order(origin, tmp_path):
    """InceptionV3's conv2d_N / batch_normalization_N numbers differ between the writing process
    and ours (we build other models first); matching must not depend on them."""
    keras.applications.InceptionV3(include_top=False, weights=None, input_shape=(75, 75, 3))
    folder, images = origin
    _check_import(folder, "inception_fun.h5", "inception_fun.npz", "inceptionv3", images[75],
                  tmp_path)


def test_wrong_backbone_names_what_did_not_match(origin, tmp_path):
    folder, _ = origin
    with pytest.raises(H5ImportError) as info:
        h5_import.import_h5(folder / "resnet_seq.h5", "vgg16", "wrong", tmp_path, input_size=64)
    message = str(info.value)
    assert "resnet_seq.h5" in message and "\n" not in message
    assert "missing" in message and "block1_conv1" in message
    assert "unused" in message and "conv1_conv" in message
    assert list(tmp_path.iterdir()) == []


def _with_conv1_kernel(origin, path, write_kernel):
    """A copy of the origin ResNet50 .h5 whose conv1_conv kernel is replaced by
    write_kernel(group, "kernel:0")."""
    folder, _ = origin
    path.write_bytes((folder / "resnet_seq.h5").read_bytes())
    with h5py.File(path, "r+") as handle:
        group = handle["model_weights/resnet50/conv1_conv"]
        del group["kernel:0"]
        write_kernel(group, "kernel:0")
    return path


def test_shape_mismatch_is_named(origin, tmp_path):
    broken = _with_conv1_kernel(origin, tmp_path / "broken.h5", lambda group, name: group.create_dataset(
        name, data=np.zeros((7, 7, 3, 32), np.float32)))
    with pytest.raises(H5ImportError, match=r"conv1_conv/kernel file \(7, 7, 3, 32\)"):
        h5_import.import_h5(broken, "resnet50", "broken", tmp_path / "out", input_size=64)


def test_files_that_are_not_keras_h5_are_refused(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(H5ImportError, match="not an HDF5 file"):
        h5_import.import_h5(text, "resnet50", "x", tmp_path)
    empty = tmp_path / "empty.h5"
    h5py.File(empty, "w").close()
    with pytest.raises(H5ImportError, match="no Keras model"):
        h5_import.import_h5(empty, "resnet50", "x", tmp_path)
    with pytest.raises(H5ImportError, match="not found"):
        h5_import.import_h5(tmp_path / "absent.h5", "resnet50", "x", tmp_path)


def _config_with(after_normalization: dict) -> dict:
    """A Keras 2 model_config shaped like an origin file: Sequential holding a Functional base."""
    layers = [
        {"class_name": "Rescaling", "name": "rescaling", "config": {"name": "rescaling", "scale": 1 / 255},
         "inbound_nodes": [[["input_1", 0, 0, {}]]]},
        {"class_name": "Normalization", "name": "normalization", "config": {"name": "normalization"},
         "inbound_nodes": [[["rescaling", 0, 0, {}]]]},
        after_normalization,
    ]
    base = {"class_name": "Functional", "config": {"name": "efficientnetb7", "layers": layers}}
    return {"class_name": "Sequential", "config": {"name": "sequential", "layers": [base]}}


def test_post_normalization_scale_is_read_from_either_keras2_form():
    rescaling = {"class_name": "Rescaling", "name": "rescaling_1",
                 "config": {"name": "rescaling_1", "scale": [2.0, 3.0, 4.0]},
                 "inbound_nodes": [[["normalization", 0, 0, {}]]]}
    multiply = {"class_name": "TFOpLambda", "name": "tf.math.multiply",
                "config": {"name": "tf.math.multiply", "function": "math.multiply"},
                "inbound_nodes": [["normalization", 0, 0, {"y": [[[[2.5, 2.0, 1.5]]]]}]]}
    padding = {"class_name": "ZeroPadding2D", "name": "stem_conv_pad", "config": {},
               "inbound_nodes": [[["normalization", 0, 0, {}]]]}
    assert h5_import.find_normalization_rescaling(_config_with(rescaling)) == [2.0, 3.0, 4.0]
    assert h5_import.find_normalization_rescaling(_config_with(multiply)) == [2.5, 2.0, 1.5]
    assert h5_import.find_normalization_rescaling(_config_with(padding)) is None
    assert h5_import.find_normalization_rescaling(None) is None
    odd = {**padding, "class_name": "Lambda"}
    with pytest.raises(H5ImportError, match="Lambda"):
        h5_import.find_normalization_rescaling(_config_with(odd))


@pytest.mark.slow
def test_efficientnetb7_imagenet_graph_imports_exactly(tmp_path):
    """The DepthwiseConv2D case (Keras 3 cannot load such Keras 2 files itself) and the
    post-Normalization scale that tf_keras adds for weights='imagenet', folded into our graph.
    64 px keeps it affordable: the weights do not depend on the input size."""
    images = _write_origin_files(tmp_path, [
        {"backbone": "efficientnetb7", "layout": "sequential", "imagenet_graph": True, "size": 64,
         "h5": "b7.h5", "reference": "b7.npz"},
    ])[64]
    with h5py.File(tmp_path / "b7.h5") as handle:
        config = json.loads(handle.attrs["model_config"])
    scale = h5_import.find_normalization_rescaling(config)
    assert scale is not None and all(2.0 < s < 2.2 for s in scale)
    card, _ = _check_import(tmp_path, "b7.h5", "b7.npz", "efficientnetb7", images, tmp_path / "out")
    np.testing.assert_allclose(card.training["folded_rescaling"], scale)


def test_a_file_claiming_a_gigantic_weight_is_refused_before_reading_it(origin, tmp_path):
    folder, _ = origin
    # 4 TB declared, nothing written: the file stays small, reading it would not.
    huge = _with_conv1_kernel(origin, tmp_path / "huge.h5", lambda group, name: group.create_dataset(
        name, shape=(1 << 20, 1 << 20), dtype="f4", chunks=(64, 64)))
    assert huge.stat().st_size <= (folder / "resnet_seq.h5").stat().st_size + 2**20
    out = tmp_path / "zoo"
    with pytest.raises(H5ImportError, match=r"conv1_conv/kernel:0.*declares \(1048576, 1048576\)"):
        h5_import.import_h5(huge, "resnet50", "huge", out, input_size=64)
    assert not out.exists() or list(out.iterdir()) == []


def test_a_weight_that_is_not_float_data_is_refused(origin, tmp_path):
    odd = _with_conv1_kernel(origin, tmp_path / "odd.h5", lambda group, name: group.create_dataset(
        name, data=np.array([b"rm -rf /"])))
    with pytest.raises(H5ImportError, match="not an array of numbers"):
        h5_import.import_h5(odd, "resnet50", "odd", tmp_path / "zoo", input_size=64)


def test_lite_is_not_an_origin_backbone_for_import(origin, tmp_path):
    folder, _ = origin
    with pytest.raises(H5ImportError, match="not one of the origin project's backbones"):
        h5_import.import_h5(folder / "resnet_seq.h5", "efficientnet_lite0", "x", tmp_path)
