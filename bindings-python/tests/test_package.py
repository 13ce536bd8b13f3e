"""The package itself: docstring examples run, stubs match the native module, exports exist."""

from __future__ import annotations

import ast
import doctest
import importlib
from pathlib import Path

import pytest

import ringkv
import ringkv.aio
from ringkv import _native

MODULES = [
    "ringkv",
    "ringkv.errors",
    "ringkv.version",
    "ringkv.results",
    "ringkv.sim",
    "ringkv.ring",
    "ringkv.client",
    "ringkv.aio",
    "ringkv._routing",
    "ringkv._operations",
    "ringkv._transport",
    "ringkv._args",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    failures, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert failures == 0, f"{failures} docstring examples of {name} failed (see the output above)"


def test_public_names_have_docstrings() -> None:
    for name in ringkv.__all__:
        obj = getattr(ringkv, name)
        if name != "__version__":
            assert obj.__doc__, f"ringkv.{name} has no docstring"
    for cls in (ringkv.Sim, ringkv.Ring, ringkv.Client, ringkv.aio.AsyncClient, ringkv.Context, ringkv.VectorClock):
        for attr, value in vars(cls).items():
            if not attr.startswith("_") and callable(value):
                assert value.__doc__, f"{cls.__name__}.{attr} has no docstring"


def test_the_stub_matches_the_native_module() -> None:
    stub = Path(_native.__file__).with_name("_native.pyi")
    if not stub.exists():  # an installed wheel keeps the stub next to the package
        stub = Path(ringkv.__file__).with_name("_native.pyi")
    tree = ast.parse(stub.read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            native = getattr(_native, node.name)
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name not in ("__init__",):
                    assert hasattr(native, item.name), f"_native.{node.name}.{item.name} is in the stub only"
            stubbed = {item.name for item in node.body if isinstance(item, ast.FunctionDef)}
            public = {name for name in dir(native) if not name.startswith("_")}
            assert public <= stubbed, f"_native.{node.name} lacks stubs for {sorted(public - stubbed)}"
        elif isinstance(node, ast.FunctionDef):
            assert callable(getattr(_native, node.name, None)), f"_native.{node.name} is in the stub only"
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            assert hasattr(_native, node.target.id)
    stubbed_functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    native_functions = {name for name in dir(_native) if not name.startswith("_") and callable(getattr(_native, name))}
    native_functions -= {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    assert native_functions <= stubbed_functions, f"no stub for {sorted(native_functions - stubbed_functions)}"
    assert (Path(ringkv.__file__).with_name("py.typed")).exists()


def test_version() -> None:
    assert ringkv.__version__.count(".") == 2
