"""Package-level guarantees: import footprint, public names, TVB-style constructors."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import h5py
import numpy as np

import bsb_store.h5 as h5
from bsb_store.h5 import DataSet, H5File, NArray

H5_DIR = Path(h5.__file__).parent
ALLOWED_TOP_LEVEL = {"h5py", "numpy", "__future__"} | set(sys.stdlib_module_names)


def _imports(tree: ast.AST) -> list[tuple[str, bool]]:
    """(module, at module level?) for every import in a parsed module."""
    found = []
    function_lines = {
        n.lineno
        for f in ast.walk(tree)
        if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
        for n in ast.walk(f)
        if isinstance(n, (ast.Import, ast.ImportFrom))
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = ["." * node.level + (node.module or "")]
        else:
            continue
        found += [(name, node.lineno not in function_lines) for name in names]
    return found


def test_format_layer_imports_only_what_the_contract_allows():
    # Mirrors the import-linter contracts: stdlib, numpy, h5py, bsb_store.exceptions,
    # bsb_store._types; scipy only lazily inside functions.
    for module in sorted(H5_DIR.glob("*.py")):
        for name, top_level in _imports(ast.parse(module.read_text())):
            root = name.split(".")[0]
            if name.startswith(".."):
                assert name in ("..exceptions", ".._types"), (module.name, name)
            elif name.startswith("."):
                continue
            elif root == "scipy":
                assert not top_level, f"{module.name} imports scipy at module level"
            else:
                assert root in ALLOWED_TOP_LEVEL, (module.name, name)
                assert root not in {"mpi4py", "portalocker", "bsb"}


def test_public_names():
    for name in h5.__all__:
        assert getattr(h5, name) is not None
    assert h5.DataSetMetaData is h5.Statistics
    assert h5.h5_class_from_file == H5File.h5_class_from_file


class PathOnly(H5File, register=False):
    """TVB style: the constructor takes only a path."""

    def __init__(self, path):
        super().__init__(path)
        self.x = DataSet(NArray(), self, name="x")


def test_from_file_and_from_group_work_with_path_only_constructors(h5path, unchanged):
    f = PathOnly(h5path)
    f.x.store(np.arange(3.0))
    h5.register("tests.h5.PathOnly", PathOnly)
    try:
        with h5py.File(h5path, "r+") as raw:
            raw.attrs["written_by"] = "tests.h5.PathOnly"
        check = unchanged(h5path)
        opened = H5File.from_file(h5path)
        assert type(opened) is PathOnly and opened.mode == "r"
        assert opened.x.load().tolist() == [0.0, 1.0, 2.0]
        check()
        assert PathOnly(h5path).mode == "a"  # the default did not leak
        with h5py.File(h5path, "r") as raw:
            bound = PathOnly.from_group(raw)
            assert bound.mode == "r" and bound.x[1] == 1.0
    finally:
        h5.registry.formats.unregister("tests.h5.PathOnly")
