"""Reading PyTorch checkpoints (`torch.save` of a state dict) without torch, and without letting
the file run code.

A `.pth` file is a pickle. An ordinary unpickler imports and calls whatever the file names, so a
hostile checkpoint runs `os.system` the moment it is loaded. This reader resolves globals through
an allow-list only: `collections.OrderedDict`, the tensor rebuild calls and the typed storage
classes, each mapped to a function of ours that builds NumPy arrays. Anything else is refused
with UnsafeCheckpointError before it is called.

Both of torch's layouts are read:
- legacy (torch < 1.6): a magic number, protocol version and system info, each pickled, then the
  object pickle whose storages are persistent ids, then the list of storage keys, then each
  storage's raw bytes behind an int64 element count;
- zip (torch >= 1.6): `<name>/data.pkl` with the same persistent ids, each storage's bytes in
  `<name>/data/<key>`.
"""
from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class UnsafeCheckpointError(ModelError):
    """The checkpoint names a global that is not on the allow-list; nothing was executed."""


class CheckpointFormatError(ModelError):
    """The file is not a PyTorch checkpoint this reader understands."""


_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclass(frozen=True)
class _StorageType:
    """Stands in for torch.FloatStorage and its kin: only ever a dtype tag."""
    name: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(_STORAGE_DTYPES[self.name])


class _Storage:
    """A flat array of one dtype; filled from the file after the object pickle is read."""

    def __init__(self, dtype: np.dtype, numel: int):
        self.dtype, self.numel = dtype, int(numel)
        self.array: np.ndarray | None = None


@dataclass
class _PendingTensor:
    """A tensor whose storage bytes come later in a legacy file; materialised at the end."""
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def materialise(self) -> np.ndarray:
        if self.storage.array is None:
            raise CheckpointFormatError("a tensor's storage is missing from the checkpoint")
        flat = self.storage.array
        itemsize = flat.dtype.itemsize
        if not self.size:
            return np.array(flat[self.offset])
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride) if n > 0)
        if self.offset < 0 or last >= flat.size or any(s < 0 for s in self.stride):
            raise CheckpointFormatError("a tensor reaches outside its storage")
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset:], shape=self.size, strides=[s * itemsize for s in self.stride])
        return np.array(view, copy=True)


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False,
                    backward_hooks=None, metadata=None):
    if not isinstance(storage, _Storage):
        raise CheckpointFormatError("a tensor is built on something that is not a storage")
    return _PendingTensor(storage, int(storage_offset), tuple(int(n) for n in size),
                          tuple(int(s) for s in stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _AllowListUnpickler(pickle.Unpickler):
    def __init__(self, file, storages: dict[str, _Storage]):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"refusing to load the checkpoint: it asks for {module}.{name}, which a plain "
                f"state dict never needs (nothing was executed)") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise CheckpointFormatError(f"unknown persistent id in the checkpoint: {pid!r:.80}")
        storage_type, key, numel = pid[1], str(pid[2]), pid[4]
        if not isinstance(storage_type, _StorageType):
            raise CheckpointFormatError("a storage of an unknown type in the checkpoint")
        if key not in self.storages:
            self.storages[key] = _Storage(storage_type.dtype, numel)
        return self.storages[key]


def _materialise(obj):
    if isinstance(obj, _PendingTensor):
        return obj.materialise()
    if isinstance(obj, dict):
        return type(obj)((k, _materialise(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(v) for v in obj)
    return obj


def _read_legacy(file) -> dict:
    storages: dict[str, _Storage] = {}

    def header() -> object:
        return _AllowListUnpickler(file, storages).load()

    if header() != LEGACY_MAGIC:
        raise CheckpointFormatError("not a PyTorch checkpoint (bad magic number)")
    if header() != _LEGACY_PROTOCOL:
        raise CheckpointFormatError("unsupported PyTorch checkpoint protocol version")
    system = header()
    if not (isinstance(system, dict) and system.get("little_endian", True)):
        raise CheckpointFormatError("big-endian PyTorch checkpoints are not supported")
    result = _AllowListUnpickler(file, storages).load()
    keys = _AllowListUnpickler(file, storages).load()
    if not isinstance(keys, list):
        raise CheckpointFormatError("the checkpoint's storage list is damaged")
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise CheckpointFormatError(f"the checkpoint lists an unknown storage {key!r:.40}")
        counted = file.read(8)
        if len(counted) != 8:
            raise CheckpointFormatError("the checkpoint ends inside its storage data")
        (numel,) = struct.unpack("<q", counted)
        nbytes = numel * storage.dtype.itemsize
        data = file.read(nbytes)
        if numel < 0 or len(data) != nbytes:
            raise CheckpointFormatError("the checkpoint ends inside its storage data")
        storage.array = np.frombuffer(data, dtype=storage.dtype.newbyteorder("<"))
    return result


def _read_zip(path: Path) -> dict:
    storages: dict[str, _Storage] = {}
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise CheckpointFormatError("a zip checkpoint needs exactly one data.pkl")
        prefix = pickles[0][: -len("data.pkl")]
        with archive.open(pickles[0]) as handle:
            result = _AllowListUnpickler(io.BytesIO(handle.read()), storages).load()
        for key, storage in storages.items():
            try:
                data = archive.read(f"{prefix}data/{key}")
            except KeyError:
                raise CheckpointFormatError(f"storage {key!r} is missing from the zip") from None
            if len(data) < storage.numel * storage.dtype.itemsize:
                raise CheckpointFormatError(f"storage {key!r} is shorter than its tensors need")
            storage.array = np.frombuffer(data, dtype=storage.dtype.newbyteorder("<"))
    return result


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The state dict in a `.pth` file as {name: NumPy array}, legacy or zip layout.

    Raises UnsafeCheckpointError for a file that asks for anything but plain tensors, and
    CheckpointFormatError for one that is not a readable checkpoint."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            result = _read_zip(path)
        else:
            with open(path, "rb") as file:
                result = _read_legacy(file)
    except (pickle.UnpicklingError, EOFError, ValueError, struct.error) as error:
        raise CheckpointFormatError(f"cannot read {path.name} as a PyTorch checkpoint: "
                                    f"{error}") from None
    result = _materialise(result)
    if isinstance(result, dict) and isinstance(result.get("state_dict"), dict):
        result = result["state_dict"]
    if not isinstance(result, dict) or not all(isinstance(v, np.ndarray) for v in result.values()):
        raise CheckpointFormatError(f"{path.name} does not hold a state dict of tensors")
    return dict(result)
