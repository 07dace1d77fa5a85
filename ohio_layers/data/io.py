"""Atomic, byte-deterministic ``.npz`` files (same arrays -> same bytes)."""
from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Dict, Mapping, Tuple, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]
_META = "__metadata__.json"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed zip timestamps keep the bytes reproducible


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace`` (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_npz(path: PathLike, arrays: Mapping[str, np.ndarray], metadata: Mapping[str, Any] | None = None) -> None:
    """Save arrays (+ JSON metadata) atomically, sorted by key, with fixed zip timestamps."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for key in sorted(arrays):
            if key == _META:
                raise ValueError(f"array name {_META!r} is reserved")
            arr_buf = io.BytesIO()
            np.lib.format.write_array(arr_buf, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=_EPOCH), arr_buf.getvalue())
        meta = json.dumps(dict(metadata or {}), sort_keys=True, default=_jsonable).encode()
        zf.writestr(zipfile.ZipInfo(_META, date_time=_EPOCH), meta)
    atomic_write_bytes(path, buf.getvalue())


def load_npz(path: PathLike) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """Inverse of :func:`save_npz`: ``(arrays, metadata)``."""
    arrays: Dict[str, np.ndarray] = {}
    metadata: Dict[str, Any] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if name == _META:
                    try:
                        metadata = json.loads(zf.read(name))
                    except (ValueError, UnicodeDecodeError) as e:
                        raise ValueError(f"{path}: corrupt dataset metadata ({_META}): {e}") from None
                    if not isinstance(metadata, dict):
                        raise ValueError(f"{path}: dataset metadata ({_META}) must be a JSON object, "
                                         f"got {type(metadata).__name__}")
                elif name.endswith(".npy"):
                    with zf.open(name) as f:
                        arrays[name[:-4]] = np.lib.format.read_array(f, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as e:
        raise ValueError(f"{path}: not a readable dataset file (.npz): {e}") from None
    return arrays, metadata


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"metadata value of type {type(x).__name__} is not JSON serialisable")
