"""
The package layout is the architecture (README "How it works"): each layer package may import
only the layers below it, pure layers import no I/O library, and no two modules import each
other, directly or round a loop. This walks every import of every module (the ones under
C{TYPE_CHECKING} and inside functions too: a dependency is a dependency) and fails naming the
offending line.

Written by hand rather than with import-linter: the rules are a dozen lines of data, and the
failure message names file and line, which import-linter's does not.
"""

from __future__ import annotations

import ast
import pathlib
from collections.abc import Iterator

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "pushpin_tx"

#: layer -> the layers (of ours) it may import; "" is the top-level module pushpin_tx itself
#: (its __version__). _compat is the one home of private Twisted and autobahn names, below all.
ALLOWED: dict[str, set[str]] = {
    "": set(),
    "_compat": set(),
    "protocol": {"", "protocol"},
    "core": {"", "protocol", "core"},
    "net": {"", "_compat", "net"},
    "origin": {"", "_compat", "protocol", "core", "net", "origin"},
    "web": {"", "_compat", "protocol", "core", "net", "origin", "web"},
    "zeromq": {"", "_compat", "protocol", "core", "net", "zeromq"},
    "websocket": {"", "_compat", "protocol", "core", "net", "origin", "web", "websocket"},
    "workers": {"", "_compat", "protocol", "core", "net", "workers"},
    # scale-out engines (Redis, ZeroMQ brokers): publishes in and out through core's intake
    "backplane": {"", "_compat", "protocol", "core", "net", "zeromq", "backplane"},
    "ops": {"", "_compat", "protocol", "core", "net", "origin", "web", "websocket", "zeromq", "workers", "backplane", "ops"},
    "service": {"", "_compat", "protocol", "core", "net", "origin", "web", "websocket", "zeromq", "workers", "backplane",
                "ops", "service"},
    # tap may use scripts: "twistd pushpin --check" is pushpin-tx-check (scripts.check)
    "tap": {"", "_compat", "protocol", "core", "net", "origin", "web", "websocket", "zeromq", "workers", "backplane", "ops",
            "service", "tap", "scripts"},
    "scripts": set(),  # filled below: everything
}
ALLOWED["scripts"] = set(ALLOWED) | {"scripts"}

#: third-party roots a layer may not import: protocol is pure (no I/O library at all); core
#: has a clock and Deferreds but no sockets, no web server, no WebSocket or ZeroMQ library.
FORBIDDEN_LIBRARIES: dict[str, tuple[str, ...]] = {
    "protocol": ("twisted", "autobahn", "zmq", "treq", "txaio", "prometheus_client", "socket"),
    "core": ("twisted.web", "twisted.internet.tcp", "twisted.internet.reactor", "autobahn", "zmq", "treq", "socket"),
}


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: pathlib.Path) -> Iterator[tuple[int, str]]:
    """Every module name C{path} imports, with its line (relative imports resolved)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield node.lineno, target
            # "from pushpin_tx.protocol import items" names the module pushpin_tx.protocol.items
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                if (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py").exists():
                    yield node.lineno, candidate


def _modules() -> list[pathlib.Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _ours(target: str) -> bool:
    return target == "pushpin_tx" or target.startswith("pushpin_tx.")


def test_every_module_is_in_a_known_layer() -> None:
    """A new top-level module or package is given a place in the layer table."""
    unknown = sorted({_layer(_module_name(p)) for p in _modules()} - set(ALLOWED))
    assert not unknown, unknown


def test_layers_import_only_layers_below() -> None:
    """No module imports a layer above its own (or beside it, where the table says so)."""
    wrong = []
    for path in _modules():
        layer = _layer(_module_name(path))
        for line, target in _imports(path):
            if _ours(target) and _layer(target) not in ALLOWED[layer]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({layer or 'top'}) imports {target}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("layer", sorted(FORBIDDEN_LIBRARIES))
def test_pure_layers_import_no_io_library(layer: str) -> None:
    """protocol imports no Twisted, WebSocket or ZeroMQ library; core no socket-level one."""
    wrong = []
    for path in (PACKAGE / layer).rglob("*.py"):
        for line, target in _imports(path):
            if any(target == lib or target.startswith(lib + ".") for lib in FORBIDDEN_LIBRARIES[layer]):
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles() -> None:
    """No module depends on itself through others (Tarjan's strongly connected components)."""
    graph: dict[str, set[str]] = {}
    for path in _modules():
        name = _module_name(path)
        graph[name] = set()
        for _, target in _imports(path):
            if _ours(target) and target != name and (PACKAGE.parent / target.replace(".", "/")).with_suffix(".py").exists():
                graph[name].add(target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)
