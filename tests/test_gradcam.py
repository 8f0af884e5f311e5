"""Grad-CAM on real Keras models: a hand-set model whose answer is known, and a tiny backbone."""
from __future__ import annotations

import numpy as np
import pytest
import skimage.data

import keras

from core.models.backbones import build_classifier
from core.models.gradcam import gradcam, overlay
from tests.fixtures import ASTRONAUT_CROP


@pytest.fixture(scope="module")
def brightness_model():
    """P(fake) rises with the mean brightness of one 1x1-conv feature map, so Grad-CAM must be
    hot exactly where the picture is bright."""
    inputs = keras.Input((32, 32, 3))
    features = keras.layers.Conv2D(1, 1, activation="relu", name="features")(inputs / 255.0)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    outputs = keras.layers.Dense(1, activation="sigmoid")(pooled)
    model = keras.Model(inputs, outputs)
    model.get_layer("features").set_weights([np.full((1, 1, 3, 1), 1 / 3, np.float32),
                                             np.zeros(1, np.float32)])
    model.layers[-1].set_weights([np.ones((1, 1), np.float32), np.zeros(1, np.float32)])
    return model


@pytest.fixture(scope="module")
def tiny_vgg():
    keras.utils.set_random_seed(3)
    return build_classifier("vgg16", depth="block2_pool", input_size=64)


def _face_crop(size=160) -> np.ndarray:
    import cv2

    x1, y1, x2, y2 = ASTRONAUT_CROP
    return cv2.resize(skimage.data.astronaut()[y1:y2, x1:x2], (size, size))


def test_heatmap_is_hot_where_the_evidence_is(brightness_model):
    crop = np.zeros((96, 96, 3), np.uint8)
    crop[:24, :24] = 255                       # bright corner: the only thing raising P(fake)
    heatmap = gradcam(brightness_model, crop)
    assert heatmap.shape == (96, 96)
    assert heatmap.dtype == np.float32
    assert heatmap[:20, :20].mean() > 0.9
    assert heatmap[40:, 40:].max() < 0.05


def test_heatmap_of_a_dark_crop_is_all_zero(brightness_model):
    heatmap = gradcam(brightness_model, np.zeros((50, 70, 3), np.uint8))
    assert heatmap.shape == (50, 70)
    assert not heatmap.any()


def test_tiny_backbone_heatmap_has_crop_size_range_and_follows_the_input(tiny_vgg):
    face = _face_crop(160)                     # gallery crops are 160 px, the model takes 64
    heatmap = gradcam(tiny_vgg, face)
    assert heatmap.shape == (160, 160)
    assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0
    assert heatmap.max() > 0.9 and heatmap.std() > 0.01      # normalised to its peak

    shifted = np.roll(face, 60, axis=1)
    other = gradcam(tiny_vgg, shifted)
    assert np.abs(other - heatmap).mean() > 0.02


def test_overlay_keeps_size_and_colours_hot_areas_red():
    crop = np.full((40, 40, 3), 128, np.uint8)
    heatmap = np.zeros((40, 40), np.float32)
    heatmap[:10, :10] = 1.0
    blended = overlay(crop, heatmap, alpha=0.5)
    assert blended.shape == crop.shape and blended.dtype == np.uint8
    hot, cold = blended[5, 5], blended[30, 30]
    assert hot[0] > hot[2] + 50                # red dominates where the heat is
    assert cold[2] > cold[0] + 50              # blue where there is none
    with pytest.raises(ValueError):
        overlay(crop, np.zeros((20, 20), np.float32))


def test_rejects_what_is_not_a_model_or_a_crop(brightness_model):
    with pytest.raises(TypeError):
        gradcam(object(), np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(ValueError):
        gradcam(brightness_model, np.zeros((32, 32), np.uint8))


def test_a_framed_models_heatmap_lies_inside_the_part_it_sees():
    """A model that keeps the central half of its input (backbones.FRAMING_LAYER): its feature
    map covers that half alone, so the heatmap is placed there, zero on the border it cuts."""
    keras.utils.set_random_seed(3)
    framed = build_classifier("vgg16", depth="block2_pool", input_size=64, framing=0.5)
    heatmap = gradcam(framed, _face_crop(160))
    assert heatmap.shape == (160, 160) and heatmap.max() > 0.9
    assert heatmap[:30].max() == 0 and heatmap[-30:].max() == 0
    assert heatmap[:, :30].max() == 0 and heatmap[:, -30:].max() == 0
    assert heatmap[45:115, 45:115].mean() > 0.05
