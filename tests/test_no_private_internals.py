"""No private TensorFlow or Keras (or other libraries') internals outside ``trainkit/compat.py``.

A private name is an upgrade's breaking point. The scan reads every module of
``trainkit/`` (its syntax tree, not its text) and fails on:

- an import of ``keras.src...`` or ``tensorflow.python...``;
- ``x._y`` (or ``getattr(x, "_y")``, ``hasattr``, ``setattr``) where ``_y`` is
  not a name trainkit defines itself (a method, a function, an attribute it
  assigns): a module's own ``self._x`` and trainkit's own objects are fine,
  ``optimizer._var_key`` or ``model._flatten_layers`` are not.

The one exception is ``trainkit/compat.py``, whose shims ``tests/test_compat.py``
checks on the installed versions.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "trainkit"
COMPAT = PACKAGE / "compat.py"
PRIVATE_MODULES = ("keras.src", "tensorflow.python")

#: Underscore names that are documented, public API of their library.
DOCUMENTED = {
    "_exit",  # os._exit
    "_replace", "_asdict", "_fields", "_make",  # collections.namedtuple
    "_missing_", "_generate_next_value_", "_value_", "_name_",  # enum
}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p != COMPAT)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__")) and name not in DOCUMENTED


def _own_private_names(trees: dict[Path, ast.AST]) -> set[str]:
    """Every private name trainkit defines: its functions, methods and classes,
    and every attribute it assigns (``self._x = ...``, ``recipe._source = ...``)."""
    names: set[str] = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)  # class attributes (``_slots = ...``) and module globals
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)  # dataclass fields
    return {name for name in names if _is_private(name)}


def _accessed_name(node: ast.AST) -> tuple[ast.AST, str] | None:
    """``(object, attribute)`` of ``x._y`` or ``getattr(x, "_y", ...)`` (and has/setattr)."""
    if isinstance(node, ast.Attribute):
        return node.value, node.attr
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("getattr", "hasattr", "setattr")
        and len(node.args) >= 2
        and isinstance(node.args[1], ast.Constant)
        and isinstance(node.args[1].value, str)
    ):
        return node.args[0], node.args[1].value
    return None


def _violations(path: Path, tree: ast.AST, own: set[str]) -> list[str]:
    where = path.relative_to(PACKAGE.parent)
    found = []
    for node in ast.walk(tree):
        modules = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module]
        for module in modules:
            if module.startswith(PRIVATE_MODULES):
                found.append(f"{where}:{node.lineno}: imports {module}")
        access = _accessed_name(node)
        if access is None:
            continue
        owner, name = access
        if not _is_private(name) or name in own:
            continue
        if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
            continue
        found.append(f"{where}:{node.lineno}: uses the private {ast.unparse(owner)}.{name}")
    return found


def test_no_private_library_internals_outside_compat():
    trees = {path: ast.parse(path.read_text(), filename=str(path)) for path in _modules()}
    own = _own_private_names(trees)
    found = [line for path, tree in trees.items() for line in _violations(path, tree, own)]
    assert not found, "private TensorFlow/Keras/library use outside trainkit/compat.py:\n" + "\n".join(found)


def test_the_scan_catches_what_it_is_for():
    sample = ast.parse(
        "import keras.src.backend\n"
        "from tensorflow.python.framework import config\n"
        "optimizer._var_key(v)\n"
        "getattr(layer, '_seed_generators', [])\n"
        "self._mine = 1\n"
        "os._exit(0)\n"
    )
    found = _violations(PACKAGE / "sample.py", sample, own={"_mine"})
    assert sorted(line.split(": ", 1)[1] for line in found) == [
        "imports keras.src.backend",
        "imports tensorflow.python.framework",
        "uses the private layer._seed_generators",
        "uses the private optimizer._var_key",
    ]
