"""Origin-project Keras 2 .h5 files -> our .keras + card.

Nothing in the .h5 is executed or deserialised: we build our own architecture for the backbone and
copy weight arrays read with h5py. The stored model_config is only read as JSON to spot
EfficientNet's imagenet-only Rescaling layer."""
from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np

import keras

from core.errors import H5ImportError
from core.models import backbones
from core.models.model_store import SAFE_NAME, ModelCard, file_sha256, save_model

_MAX_LISTED = 5
# The largest origin model (EfficientNetB7, 64 M parameters) holds 256 MB of float32 weights and
# no single array above 10 MB; a file claiming more is refused before anything is read.
MAX_WEIGHT_BYTES = 64 * 2**20
MAX_TOTAL_BYTES = 1 * 2**30
MAX_CONFIG_BYTES = 16 * 2**20


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_h5_weights(h5_path) -> tuple[dict[str, dict[str, np.ndarray]], dict | None]:
    """{layer name: {weight name: array}} in file order, and the model_config JSON (None for a
    weights-only file). Nested models (Sequential([base, ...])) are flattened: a weight stored as
    "conv1_conv/kernel:0" belongs to layer conv1_conv whichever group holds it."""
    path = Path(h5_path)
    if not path.is_file():
        raise H5ImportError(f"file not found: {path}")
    try:
        handle = h5py.File(path, "r")
    except OSError:
        raise H5ImportError(f"{path.name} is not an HDF5 file") from None
    with handle:
        if "model_weights" in handle:
            group = handle["model_weights"]
        elif "layer_names" in handle.attrs:
            group = handle
        else:
            raise H5ImportError(f"{path.name} holds no Keras model or weights (no layer_names)")
        config = None
        if "model_config" in handle.attrs:
            text = _text(handle.attrs["model_config"])
            if len(text) > MAX_CONFIG_BYTES:
                raise H5ImportError(f"{path.name} has a model_config of {len(text)} bytes; "
                                    f"a Keras model's is far smaller")
            try:
                config = json.loads(text)
            except json.JSONDecodeError:
                raise H5ImportError(f"{path.name} has an unreadable model_config") from None

        datasets = _weight_datasets(group, path.name)
        layers: dict[str, dict[str, np.ndarray]] = {}
        for layer_name, weight_name, dataset in datasets:
            layers.setdefault(layer_name, {})[weight_name] = np.asarray(dataset)
    return layers, config


def _weight_datasets(group, file_name: str) -> list[tuple[str, str, "h5py.Dataset"]]:
    """(layer, weight, dataset) for every weight the file lists, checked for kind and size before
    any data is read: a file can declare arrays far larger than itself (unwritten chunks)."""
    found = []
    owner: dict[str, str] = {}
    total = 0
    for group_name in (_text(n) for n in group.attrs["layer_names"]):
        try:
            layer_group = group[group_name]
        except KeyError:
            raise H5ImportError(f"{file_name} lists layer {group_name!r} but does not hold it") from None
        for weight_path in (_text(w) for w in layer_group.attrs.get("weight_names", [])):
            parts = weight_path.split("/")
            layer_name = parts[-2] if len(parts) >= 2 else group_name
            weight_name = parts[-1].split(":")[0]
            if owner.setdefault(layer_name, group_name) != group_name:
                raise H5ImportError(
                    f"{file_name}: layer name {layer_name!r} appears in two groups "
                    f"({owner[layer_name]!r}, {group_name!r})"
                )
            dataset = layer_group.get(weight_path)
            if not isinstance(dataset, h5py.Dataset) or dataset.dtype.kind not in "fiu":
                raise H5ImportError(f"{file_name}: weight {weight_path!r} is not an array of "
                                    f"numbers")
            size = int(dataset.size) * dataset.dtype.itemsize
            total += size
            if size > MAX_WEIGHT_BYTES or total > MAX_TOTAL_BYTES:
                raise H5ImportError(
                    f"{file_name}: weight {weight_path!r} declares {dataset.shape} "
                    f"({size / 2**20:.0f} MB); no origin backbone has weights that large")
            found.append((layer_name, weight_name, dataset))
    return found


def _walk_layer_lists(node):
    """Every `layers` list of every (nested) model in a Keras model_config."""
    if isinstance(node, dict):
        config = node.get("config")
        if isinstance(config, dict) and isinstance(config.get("layers"), list):
            yield config["layers"]
        for value in node.values():
            yield from _walk_layer_lists(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk_layer_lists(value)


def _find_key(node, key):
    if isinstance(node, dict):
        if key in node:
            return node[key]
        node = list(node.values())
    if isinstance(node, list):
        for value in node:
            found = _find_key(value, key)
            if found is not None:
                return found
    return None


def _per_channel(value, what: str) -> list[float]:
    flat = np.asarray(value, dtype=np.float64).reshape(-1) if value is not None else np.zeros(0)
    if flat.size == 1:
        flat = np.repeat(flat, 3)
    if flat.size != 3:
        raise H5ImportError(f"unreadable {what} after Normalization: {value!r}")
    return [float(v) for v in flat]


def find_normalization_rescaling(config: dict | None) -> list[float] | None:
    """The per-channel scale tf.keras' EfficientNet (built with weights="imagenet") applies right
    after its Normalization layer, or None. Keras 2.x wrote it as Rescaling(scale), tf_keras as
    tf.math.multiply(x, y). Pure JSON inspection; an unknown layer there is an error."""
    if not config:
        return None
    for layer_list in _walk_layer_lists(config):
        entries = [entry for entry in layer_list if isinstance(entry, dict)]
        norm_names = {
            entry.get("name") or entry.get("config", {}).get("name")
            for entry in entries if entry.get("class_name") == "Normalization"
        }
        norm_names.discard(None)
        for entry in entries:
            inbound = json.dumps(entry.get("inbound_nodes", []))
            if not any(f'"{name}"' in inbound for name in norm_names):
                continue
            kind = entry.get("class_name")
            if kind == "Rescaling":
                return _per_channel(entry.get("config", {}).get("scale"), "Rescaling scale")
            function = str(entry.get("config", {}).get("function", ""))
            if kind == "TFOpLambda" and function.split(".")[-1] == "multiply":
                return _per_channel(_find_key(entry.get("inbound_nodes"), "y"), "multiplier")
            if kind != "ZeroPadding2D":
                raise H5ImportError(
                    f"unexpected {kind} layer after Normalization; cannot reproduce it"
                )
    return None


def _snake_case(class_name: str) -> str:
    """Keras' rule for a layer's default name: DepthwiseConv2D -> depthwise_conv2d."""
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", class_name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _split_auto_name(name: str, auto_bases: set[str]) -> tuple[str, int] | None:
    """("conv2d", 93) for "conv2d_93": Keras' generated names, whose numbers depend on how many
    layers of that kind the building process had made before, so they differ between files."""
    match = re.fullmatch(r"(.+?)(?:_(\d+))?", name)
    if match and match.group(1) in auto_bases:
        return match.group(1), int(match.group(2) or 0)
    return None


def _canonical_keys(names: list[str], auto_bases: set[str]) -> dict[str, object]:
    """Explicit names stay; generated names become (kind, rank by creation number)."""
    keys: dict[str, object] = {}
    by_base: dict[str, list[tuple[int, str]]] = {}
    for name in names:
        auto = _split_auto_name(name, auto_bases)
        if auto is None:
            keys[name] = name
        else:
            by_base.setdefault(auto[0], []).append((auto[1], name))
    for base, numbered in by_base.items():
        for rank, (_, name) in enumerate(sorted(numbered)):
            keys[name] = (base, rank)
    return keys


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")


def assign_h5_weights(model: keras.Model, file_layers: dict[str, dict[str, np.ndarray]],
                      source_name: str = "file") -> None:
    """Copy file arrays into model, matched by layer + weight name (generated names by creation
    order), the head Dense by shape. Raises H5ImportError naming every mismatch it found."""
    our_layers = {layer.name: layer for layer in model.layers if layer.weights}
    head = model.get_layer(backbones.HEAD_LAYER)
    head_shape = tuple(head.kernel.shape)
    file_layers = dict(file_layers)
    head_candidates = [
        name for name, weights in file_layers.items()
        if "kernel" in weights and tuple(weights["kernel"].shape) == head_shape
    ]
    missing, mismatched = [], []
    pairs = []
    if head_candidates:
        pairs.append((head, file_layers.pop(head_candidates[-1])))
    else:
        missing.append(f"{backbones.HEAD_LAYER} (a Dense with kernel {head_shape})")
    del our_layers[backbones.HEAD_LAYER]

    auto_bases = {_snake_case(type(layer).__name__) for layer in model.layers}
    our_keys = _canonical_keys(list(our_layers), auto_bases)
    file_keys = _canonical_keys(list(file_layers), auto_bases)
    file_by_key = {key: name for name, key in file_keys.items()}

    used_files = set()
    for our_name, layer in our_layers.items():
        file_name = file_by_key.get(our_keys[our_name])
        if file_name is None:
            missing.append(our_name)
            continue
        used_files.add(file_name)
        pairs.append((layer, file_layers[file_name]))
    unused = [name for name in file_layers if name not in used_files]

    assignments = []
    for layer, arrays in pairs:
        arrays = dict(arrays)
        own = {w.name for w in layer.weights}
        # Keras 3 calls DepthwiseConv2D's kernel "kernel"; Keras 2 called it "depthwise_kernel".
        if "depthwise_kernel" in arrays and "depthwise_kernel" not in own and "kernel" not in arrays:
            arrays["kernel"] = arrays.pop("depthwise_kernel")
        for variable in layer.weights:
            label = f"{layer.name}/{variable.name}"
            if variable.name not in arrays:
                missing.append(label)
                continue
            array = arrays.pop(variable.name)
            if tuple(array.shape) != tuple(variable.shape):
                mismatched.append(f"{label} file {tuple(array.shape)} vs model {tuple(variable.shape)}")
                continue
            assignments.append((variable, array))
        unused.extend(f"{layer.name}/{extra}" for extra in arrays)

    if missing or mismatched or unused:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing in file ({_listed(missing)})")
        if mismatched:
            problems.append(f"{len(mismatched)} shape mismatches ({_listed(mismatched)})")
        if unused:
            problems.append(f"{len(unused)} file weights unused ({_listed(unused)})")
        raise H5ImportError(f"{source_name} does not fit our {model.name}: " + "; ".join(problems))
    for variable, array in assignments:
        variable.assign(array.astype(variable.dtype))
    for layer, _ in pairs:
        # Normalization serves cached copies of its variables until told to refresh them.
        if hasattr(layer, "finalize_state"):
            layer.finalize_state()


def import_h5(h5_path, backbone: str, name: str, out_dir, *, input_size: int = 224,
              preprocessing: str = "raw", efficientnet_rescaling: list[float] | None = None
              ) -> ModelCard:
    """Origin .h5 (full model or save_weights file) -> OUT_DIR/NAME.keras + NAME.json.

    efficientnet_rescaling: the scale of the Rescaling layer after Normalization when the file
    does not say (a weights-only file of an EfficientNet built with weights="imagenet" needs
    [1/sqrt(s) for s in backbones.EFFICIENTNET_IMAGENET_STDDEV_RGB])."""
    h5_path = Path(h5_path)
    if not SAFE_NAME.fullmatch(name):
        raise ValueError(f"model name {name!r} must be letters, digits, '.', '_' or '-'")
    if not backbones.get_spec(backbone).origin:
        raise H5ImportError(f"{backbone} is not one of the origin project's backbones; .h5 import "
                            f"takes {', '.join(backbones.ORIGIN_BACKBONES)}")
    file_layers, config = read_h5_weights(h5_path)

    model = backbones.build_classifier(
        backbone, depth="full", input_size=input_size, preprocessing=preprocessing
    )
    assign_h5_weights(model, file_layers, source_name=h5_path.name)

    scale = find_normalization_rescaling(config)
    if scale is None:
        scale = efficientnet_rescaling
    if scale is not None:
        norms = [layer for layer in model.layers if isinstance(layer, keras.layers.Normalization)]
        if len(norms) != 1:
            raise H5ImportError(
                f"{h5_path.name} rescales after a Normalization layer but our {backbone} has "
                f"{len(norms)} Normalization layers"
            )
        backbones.fold_rescaling_into_normalization(norms[0], scale)

    return save_model(
        model,
        Path(out_dir) / f"{name}.keras",
        backbone=backbone,
        depth="full",
        preprocessing=preprocessing,
        training={
            "source": "origin-project .h5 import",
            "file": h5_path.name,
            "source_sha256": file_sha256(h5_path),
            "folded_rescaling": scale,
        },
        threshold=0.5,
        temperature=1.0,
        metrics={},
        notes=f"imported from {h5_path.name}; raw RGB [0, 255] in, P(fake) out",
    )
