"""Read a ``.pkl`` file a publisher released without running code from it.

``pickle`` calls any importable function a file names; a released ``.pkl`` (EchoPrime's candidate reports,
labels, section -> phenotype table) is data, so :func:`load_plain` admits only the reconstructors of plain
data: containers, numbers and strings need no global at all; numpy arrays, dtypes and scalars; pandas
``Series``/``DataFrame``/``Index`` (numeric, object or Arrow-backed string columns, as pandas 1-3 write them).
Any other global (``os.system``, ``builtins.eval``, a class of some package) is refused with a
``MedvidError`` naming the file and the global, before anything is called.
"""
from __future__ import annotations

import importlib
import os
import pickle
from pathlib import Path
from typing import Any

from medvid.errors import MedvidError

# (module, name) -> where the name lives now. numpy 1 wrote ``numpy.core.*``, numpy 2 ``numpy._core.*``.
_NUMPY_CORE = {"_reconstruct": "multiarray", "scalar": "multiarray", "_frombuffer": "numeric"}
ALLOWED: frozenset[tuple[str, str]] = frozenset({
    ("builtins", "slice"), ("builtins", "bytearray"), ("builtins", "set"), ("builtins", "frozenset"),
    ("builtins", "complex"), ("__builtin__", "slice"), ("__builtin__", "bytearray"), ("__builtin__", "set"),
    ("__builtin__", "frozenset"), ("__builtin__", "complex"),
    ("_codecs", "encode"),                          # protocol-2 bytes
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    *((f"numpy.{core}.{mod}", name) for core in ("core", "_core") for name, mod in _NUMPY_CORE.items()),
    ("pandas", "DataFrame"), ("pandas", "Series"), ("pandas", "Index"), ("pandas", "RangeIndex"),
    ("pandas", "StringDtype"), ("pandas.core.frame", "DataFrame"), ("pandas.core.series", "Series"),
    ("pandas.core.indexes.base", "_new_Index"), ("pandas.core.indexes.base", "Index"),
    ("pandas.core.indexes.range", "RangeIndex"), ("pandas._libs.internals", "_unpickle_block"),
    ("pandas.core.internals.managers", "BlockManager"), ("pandas.core.internals.managers", "SingleBlockManager"),
    ("pandas.core.internals.blocks", "new_block"), ("pandas.core.arrays.string_", "StringDtype"),
    ("pandas.arrays", "ArrowStringArray"), ("pandas.core.arrays.string_arrow", "ArrowStringArray"),
    ("pyarrow.lib", "_restore_array"), ("pyarrow.lib", "py_buffer"), ("pyarrow.lib", "type_for_alias"),
})
_NUMPY_DTYPE_CLASSES = "numpy.dtypes"  # numpy 2 pickles a dtype's class (Float64DType, ...): plain too


class _PlainUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, path: Path):
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        plain = (module, name) in ALLOWED or (module == _NUMPY_DTYPE_CLASSES and name.endswith("DType"))
        if not plain:
            raise MedvidError(f"{self.path}: refused to read: the pickle names {module}.{name}, which is not plain "
                              "data (only containers, numbers, strings, numpy arrays/scalars and pandas "
                              "tables are read from .pkl files; nothing in it was run)")
        if module.startswith("numpy.core.") or module.startswith("numpy._core."):
            module = f"numpy._core.{module.rsplit('.', 1)[1]}"
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            pass
        return super().find_class(module, name)  # pickle's own compat names (__builtin__, pandas moves)

    def persistent_load(self, pid: Any) -> Any:
        raise MedvidError(f"{self.path}: refused to read: the pickle asks for an external object")


def load_plain(path: str | os.PathLike) -> Any:
    """The plain data a ``.pkl`` file holds (see the module docstring); ``MedvidError`` naming the file and
    what was refused or why it could not be read."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _PlainUnpickler(f, path).load()
    except MedvidError:
        raise
    except OSError as exc:
        raise MedvidError(f"{path}: cannot read ({type(exc).__name__}: {exc.strerror or exc})") from exc
    except Exception as exc:  # noqa: BLE001 - any malformed pickle is one clear error
        raise MedvidError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") from exc
