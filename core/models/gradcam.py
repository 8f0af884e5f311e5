"""Grad-CAM: which parts of a face crop pushed a classifier's P(fake) up.

The gradient of the sigmoid output with respect to the last feature map, averaged over space, weighs
each channel of that map; the weighted sum, through a ReLU, is the heatmap (Selvaraju et al. 2017).
"""
from __future__ import annotations

import threading
import weakref

from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:   # Keras is imported where a heatmap is computed: `overlay`, which the app's
    import keras    # server draws with, needs neither Keras nor TensorFlow

# One two-output model per classifier model: building it costs far more than running it.
_grad_models: "weakref.WeakKeyDictionary[keras.Model, keras.Model]" = weakref.WeakKeyDictionary()
_grad_models_lock = threading.Lock()


def _keras_model(classifier_or_model) -> keras.Model:
    import keras

    model = getattr(classifier_or_model, "model", classifier_or_model)
    if not isinstance(model, keras.Model):
        raise TypeError(f"expected a Classifier or keras.Model, got {type(classifier_or_model).__name__}")
    return model


def _grad_model(model: keras.Model) -> keras.Model:
    import keras

    from .backbones import last_conv_layer

    with _grad_models_lock:
        grad_model = _grad_models.get(model)
        if grad_model is None:
            feature_map = model.get_layer(last_conv_layer(model)).output
            grad_model = keras.Model(model.inputs, [feature_map, model.outputs[0]])
            _grad_models[model] = grad_model
        return grad_model


def gradcam(classifier_or_model, crop: np.ndarray) -> np.ndarray:
    """Heatmap of crop's height x width, float32 in [0, 1] (all zeros when nothing in the crop
    raised the score). The crop (RGB, uint8 or float [0, 255]) is resized to the model's input
    size for the pass and the heatmap back to the crop's size."""
    import tensorflow as tf

    from .backbones import input_window

    model = _keras_model(classifier_or_model)
    crop = np.asarray(crop)
    if crop.ndim != 3 or crop.shape[2] != 3:
        raise ValueError(f"a crop is H x W x 3 RGB, got shape {crop.shape}")
    height, width = crop.shape[:2]
    size = int(model.input_shape[1])
    pixels = crop.astype(np.float32)
    if (height, width) != (size, size):
        pixels = cv2.resize(pixels, (size, size), interpolation=cv2.INTER_AREA)

    grad_model = _grad_model(model)
    batch = tf.convert_to_tensor(pixels[None])
    with tf.GradientTape() as tape:
        feature_map, probability = grad_model(batch, training=False)
        target = probability[:, 0]
    gradients = tape.gradient(target, feature_map)
    channel_weights = tf.reduce_mean(gradients, axis=(1, 2))            # (1, C)
    cam = tf.nn.relu(tf.einsum("bhwc,bc->bhw", feature_map, channel_weights))[0].numpy()

    peak = float(cam.max())
    if not np.isfinite(peak) or peak <= 0.0:
        return np.zeros((height, width), dtype=np.float32)
    cam = (cam / peak).astype(np.float32)
    offset, side = input_window(model)
    if side != size:
        # The feature map covers only the part of the input the framing layer keeps.
        window = np.zeros((size, size), dtype=np.float32)
        window[offset:offset + side, offset:offset + side] = cv2.resize(
            cam, (side, side), interpolation=cv2.INTER_LINEAR)
        cam = window
    cam = cv2.resize(cam, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(cam, 0.0, 1.0)


def overlay(crop: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The crop with the heatmap blended on top in the JET palette (blue = cold, red = hot);
    uint8 RGB of the crop's size."""
    crop = np.asarray(crop)
    if heatmap.shape != crop.shape[:2]:
        raise ValueError(f"heatmap {heatmap.shape} does not match crop {crop.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError("alpha must be in [0, 1]")
    levels = np.uint8(np.clip(heatmap, 0.0, 1.0) * 255)
    colours = cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    blended = (1.0 - alpha) * crop.astype(np.float32) + alpha * colours.astype(np.float32)
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)
