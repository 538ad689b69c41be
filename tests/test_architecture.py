"""The layer order of docs/architecture.md, enforced: every module of trainkit
imports only from its own layer or below (imports inside functions too), and no
two modules import each other, directly or around a cycle.

The table below mirrors docs/architecture.md; a new module must be placed in it
(the test names the ones that are not).
"""

from __future__ import annotations

from _imports import import_graph

#: Lowest first. A name covers its submodules unless a longer name is listed too.
LAYERS: list[tuple[str, list[str]]] = [
    ("foundations", [
        "trainkit.errors", "trainkit.compat", "trainkit.files", "trainkit.console", "trainkit.signals",
        "trainkit.teardown", "trainkit.startup", "trainkit.version", "trainkit.private_network",
        "trainkit.patterns", "trainkit.keras_archive",
    ]),
    ("recipe", ["trainkit.recipe", "trainkit.registry", "trainkit.components", "trainkit.loader"]),
    ("run directory", ["trainkit.rundir"]),
    ("runtime and distribution", ["trainkit.runtime", "trainkit.distribution"]),
    ("data", ["trainkit.data"]),
    ("models", ["trainkit.models", "trainkit.optim"]),
    ("plan and step", [
        "trainkit.plan", "trainkit.run_source", "trainkit.training.loop", "trainkit.training.coordinated",
        "trainkit.training.stages", "trainkit.training.events", "trainkit.training.checkpoint",
    ]),
    ("training and evaluation", ["trainkit.training", "trainkit.evaluation"]),
    ("serving and runs", ["trainkit.serving", "trainkit.runs"]),
    ("api", ["trainkit.api", "trainkit.sweeps", "trainkit.sweep", "trainkit.sidecar", "trainkit.tracking"]),
    ("commands", ["trainkit.cli", "trainkit.launch", "trainkit"]),
]


def layer_of(module: str) -> int | None:
    best, level = -1, None
    for index, (_, names) in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, level = len(name), index
    return level


def test_every_module_has_a_layer():
    missing = sorted(m for m in import_graph() if layer_of(m) is None)
    assert not missing, f"modules missing from LAYERS (and docs/architecture.md): {missing}"


def test_no_module_imports_from_a_higher_layer():
    upward = []
    for module, targets in import_graph().items():
        for target in sorted(targets):
            if layer_of(target) > layer_of(module):
                upward.append(
                    f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)} "
                    f"{LAYERS[layer_of(target)][0]})"
                )
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    assert not _cycles(import_graph())


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_function_is_longer_than_sixty_lines():
    # One job per function: the long ones (a 140-line train_run, a 108-line if-chain)
    # were where the drift began. Docstrings count: split the work, not the words.
    import ast
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "trainkit"
    long = [
        f"{path.relative_to(package.parent)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in sorted(package.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > 60
    ]
    assert not long, "split these into named steps: " + "; ".join(long)
