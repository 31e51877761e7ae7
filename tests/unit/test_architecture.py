"""The structure rules of ``../shared/design/ARCHITECTURE.md`` and issue 15, checked on the source with ``ast``:

- no import cycle among the modules inside ``edge/`` and inside ``central/`` (imports at module level, in functions and
  under ``if TYPE_CHECKING`` all count; ``from pkg import sub`` is an edge to ``pkg.sub``, not to ``pkg/__init__``);
- the layering: ``protocols`` imports only the stdlib, pymodbus, pyserial and cryptography; ``sync`` (but
  ``sync.runtime``) only the stdlib and cryptography; ``sync.runtime`` may add paho, pydantic and PyYAML;
  ``edge`` and ``central`` never import each other; none of the four imports ``tools`` (or ``tests``,
  ``floorgate_cli``); inside ``central`` only ``central/api/``, ``central/runner.py`` and ``central/cli*`` import
  ``central.api``;
- no module above ``MAX_LINES`` lines in the packages, the tests and ``floorgate_cli.py`` (migrations excepted);
- no private attribute of someone else's object: every ``x._name`` (one leading underscore, not a dunder) in the
  packages names something our own code defines (a def, a class, an assignment or attribute assignment, an import
  alias, a ``__slots__`` entry) — anything else reaches into a library's internals, which its next release may change.

Plain ``ast`` rather than import-linter: no new dependency, and import-linter can express neither "only these
third-party packages" (its forbidden contracts list what is forbidden), nor the size and private-attribute rules.
The checker's functions are tested on small synthetic trees below, so each rule is shown to fail when it should.
"""

from __future__ import annotations

import ast
import itertools
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("edge", "central", "protocols", "sync", "tools")
OURS = (*PACKAGES, "tests", "floorgate_cli")
MAX_LINES = 600
SIZE_ROOTS = ("edge", "central", "protocols", "sync", "tools", "tests", "floorgate_cli.py")
SIZE_EXEMPT = ("central/migrations/",)
STDLIB = frozenset(sys.stdlib_module_names) | {"__future__"}
# third-party top-level modules each layer may import (ours are ruled by OUR_ALLOWED); None: no restriction
THIRD_PARTY_ALLOWED: dict[str, frozenset[str] | None] = {
    "protocols": frozenset({"pymodbus", "serial", "cryptography"}),
    "sync": frozenset({"cryptography"}),
    "sync.runtime": frozenset({"cryptography", "paho", "pydantic", "yaml"}),
    "edge": None,
    "central": None,
    "tools": None,
}
# which of our top-level packages each layer may import
OUR_ALLOWED: dict[str, frozenset[str]] = {
    "protocols": frozenset({"protocols"}),
    "sync": frozenset({"sync"}),
    "sync.runtime": frozenset({"sync"}),
    "edge": frozenset({"edge", "protocols", "sync"}),
    "central": frozenset({"central", "protocols", "sync"}),
    "tools": frozenset({"tools", "edge", "central", "protocols", "sync", "floorgate_cli"}),
}
API = "central.api"
# underscore names of the stdlib that are documented public API (not reach-ins), with where they are documented
PUBLIC_UNDERSCORE_NAMES = {
    "os._exit": "os — 'Exit the process with status n, without calling cleanup handlers'",
    "argparse._SubParsersAction": "the type add_subparsers() returns (typeshed's name; annotations only)",
}


def _may_import_api(module: str) -> bool:
    """central/api/, central/runner.py and central/cli* (``cli.py``, ``cli_*.py``, a ``cli/`` package)."""
    return module in (API, "central.runner") or module.startswith((API + ".", "central.cli"))


# -- reading the tree --------------------------------------------------------------------------------------------------
@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    is_package: bool

    @property
    def rel(self) -> str:
        return self.path.as_posix()


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module: one of ours (resolved), or the top-level name of another distribution
    line: int
    ours: bool


def load_modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Module]:
    """Every module of ``packages`` under ``root`` (migrations excepted: they belong to alembic's history)."""
    out: dict[str, Module] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root)
            if "migrations" in rel.parts:
                continue
            parts = rel.with_suffix("").parts
            is_package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_package else parts)
            out[name] = Module(name, rel, ast.parse(path.read_text(encoding="utf-8"), str(rel)), is_package)
    return out


def _resolve(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _ours(name: str, modules: dict[str, Module]) -> str | None:
    """The longest prefix of ``name`` that is one of ``modules`` (``a.b.func`` → ``a.b``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: Module, modules: dict[str, Module]) -> list[Import]:
    """Every import anywhere in ``module`` (module level, functions, ``if TYPE_CHECKING``)."""
    out: list[Import] = []

    def add(name: str, line: int) -> None:
        top = name.split(".")[0]
        if top in OURS:
            target = _ours(name, modules) or name
            if target != module.name:
                out.append(Import(module.name, target, line, ours=True))
        elif top:
            out.append(Import(module.name, top, line, ours=False))

    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                add(sub if sub in modules else base, node.lineno)  # `from pkg import sub`: an edge to pkg.sub
    return out


def import_graph(modules: dict[str, Module]) -> dict[str, dict[str, int]]:
    """module → {module of ours it imports → line of the first such import}."""
    graph: dict[str, dict[str, int]] = defaultdict(dict)
    for module in modules.values():
        for imp in imports_of(module, modules):
            if imp.ours and imp.target in modules:
                graph[module.name].setdefault(imp.target, imp.line)
    return graph


# -- cycles ------------------------------------------------------------------------------------------------------------
def _components(nodes: list[str], edges: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or one that imports itself (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(edges.get(start, [])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges.get(child, []))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges.get(node, []):
                    out.append(sorted(component))
    return sorted(out)


def _shortest_cycle(start: str, members: set[str], edges: dict[str, list[str]]) -> list[str]:
    """A shortest import path from ``start`` back to itself inside ``members`` (breadth first)."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in edges.get(node, []):
                if child not in members:
                    continue
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    return [start]


def import_cycles(modules: dict[str, Module], package: str) -> list[str]:
    """One message per import cycle among the modules of ``package``: its members and one loop with import lines."""
    graph = import_graph(modules)
    inside = sorted(m for m in modules if m == package or m.startswith(package + "."))
    edges = {m: sorted(t for t in graph.get(m, {}) if t in inside) for m in inside}
    messages = []
    for component in _components(inside, edges):
        loop = _shortest_cycle(component[0], set(component), edges)
        steps = " → ".join(f"{a} ({modules[a].rel}:{graph[a][b]})" for a, b in itertools.pairwise(loop))
        messages.append(f"import cycle of {len(component)} modules in {package}/: {', '.join(component)}\n"
                        f"    e.g. {steps} → {loop[-1]}")
    return messages


# -- layering ----------------------------------------------------------------------------------------------------------
def _layer(module: str) -> str:
    return "sync.runtime" if module == "sync.runtime" or module.startswith("sync.runtime.") else module.split(".")[0]


def layering_violations(modules: dict[str, Module]) -> list[str]:
    out = []
    for module in modules.values():
        layer = _layer(module.name)
        for imp in imports_of(module, modules):
            where = f"{module.rel}:{imp.line}: {module.name} imports {imp.target}"
            if imp.ours:
                top = imp.target.split(".")[0]
                if top not in OUR_ALLOWED[layer]:
                    out.append(f"{where} ({layer} may import {', '.join(sorted(OUR_ALLOWED[layer]))} of ours)")
                elif layer == "sync" and _layer(imp.target) == "sync.runtime":
                    out.append(f"{where} (the pure contract sync must not depend on sync.runtime)")
                elif (imp.target == API or imp.target.startswith(API + ".")) and not _may_import_api(module.name):
                    out.append(f"{where} (central's domain must not import its API layer: only central/api/, "
                               "central/runner.py and central/cli* may)")
            elif imp.target not in STDLIB:
                allowed = THIRD_PARTY_ALLOWED[layer]
                if allowed is not None and imp.target not in allowed:
                    out.append(f"{where} ({layer} may import the stdlib and "
                               f"{', '.join(sorted(allowed)) or 'nothing else'})")
    return sorted(set(out))


# -- sizes -------------------------------------------------------------------------------------------------------------
def oversized(root: Path, roots: tuple[str, ...] = SIZE_ROOTS, limit: int = MAX_LINES) -> list[str]:
    paths: list[Path] = []
    for entry in roots:
        path = root / entry
        paths += [path] if path.is_file() else sorted(path.rglob("*.py"))
    out = []
    for path in paths:
        rel = path.relative_to(root).as_posix()
        if rel.startswith(SIZE_EXEMPT):
            continue
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > limit:
            out.append(f"{rel}: {lines} lines (at most {limit}; split it along a real seam)")
    return out


# -- private attributes ------------------------------------------------------------------------------------------------
def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def defined_names(modules: dict[str, Module]) -> set[str]:
    """Every name our code defines: defs, classes, assignment targets at module or class level, attributes assigned
    anywhere (``self._x = …``), import aliases and ``__slots__`` entries."""
    names: set[str] = set()

    def outside_functions(node: ast.AST) -> None:  # module and class level: plain names define attributes
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            return
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        for child in ast.iter_child_nodes(node):
            outside_functions(child)

    for module in modules.values():
        outside_functions(module.tree)
        for node in ast.walk(module.tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Import | ast.ImportFrom):
                names.update(alias.asname for alias in node.names if alias.asname)
            elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__slots__"
                                                      for t in node.targets):
                names.update(c.value for c in ast.walk(node.value)
                             if isinstance(c, ast.Constant) and isinstance(c.value, str))
    return names


def private_reach_ins(modules: dict[str, Module]) -> list[str]:
    ours = defined_names(modules)
    out = []
    for module in modules.values():
        for node in ast.walk(module.tree):
            if (isinstance(node, ast.Attribute) and _is_private(node.attr) and node.attr not in ours
                    and ast.unparse(node) not in PUBLIC_UNDERSCORE_NAMES):
                out.append(f"{module.rel}:{node.lineno}: {ast.unparse(node)} — {node.attr} is defined nowhere in "
                           "our code: a private attribute of a library's object (use its public API)")
    return sorted(out, key=lambda text: (text.split(":")[0], int(text.split(":")[1]), text))


# -- the rules on the real tree ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    return load_modules(REPO)


def _report(problems: list[str]) -> str:
    return f"{len(problems)} problem(s):\n" + "\n".join(problems)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle_inside_the_package(modules: dict[str, Module], package: str) -> None:
    cycles = import_cycles(modules, package)
    assert not cycles, _report(cycles)


def test_the_layers_import_only_what_architecture_md_allows(modules: dict[str, Module]) -> None:
    problems = layering_violations(modules)
    assert not problems, _report(problems)


def test_no_module_is_above_the_size_limit() -> None:
    problems = oversized(REPO)
    assert not problems, _report(problems)


def test_no_private_attribute_of_a_library_object_is_touched(modules: dict[str, Module]) -> None:
    problems = private_reach_ins(modules)
    assert not problems, _report(problems)


def test_the_checker_sees_the_whole_tree(modules: dict[str, Module]) -> None:
    """Guards the checks above against passing vacuously (a wrong root, a package not found)."""
    for package in PACKAGES:
        assert package in modules, f"{package}/__init__.py not found under {REPO}"
    assert len(modules) > 150
    assert sum(1 for imp in imports_of(modules["tools.bench.sync"], modules) if imp.ours) > 5


# -- the checker on synthetic trees ------------------------------------------------------------------------------------
def _tree(root: Path, files: dict[str, str]) -> dict[str, Module]:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for package in PACKAGES:
        (root / package).mkdir(exist_ok=True)
        (root / package / "__init__.py").touch()
    return load_modules(root)


def test_a_cycle_through_module_and_function_level_imports_is_found(tmp_path: Path) -> None:
    mods = _tree(tmp_path, {
        "central/api/__init__.py": "",
        "central/api/deps.py": "from central.ingest import service\n",
        "central/ingest/__init__.py": "",
        "central/ingest/service.py": "def f():\n    from ..tickets.pairing import pair\n",
        "central/tickets/__init__.py": "",
        "central/tickets/pairing.py": "import central.api.deps\ndef pair(): ...\n",
        "central/alerts/__init__.py": "",
        "central/alerts/conditions.py": "from central.alerts import engine\n",
        "central/alerts/engine.py": "def g():\n    from . import conditions\n",
        "edge/a.py": "from edge import b\n",
        "edge/b.py": "X = 1\n",
    })
    cycles = import_cycles(mods, "central")
    assert len(cycles) == 2, cycles
    alerts, api = cycles
    assert "2 modules in central/: central.alerts.conditions, central.alerts.engine" in alerts
    assert "central.api.deps, central.ingest.service, central.tickets.pairing" in api
    assert ("central.api.deps (central/api/deps.py:1) → central.ingest.service (central/ingest/service.py:2) → "
            "central.tickets.pairing (central/tickets/pairing.py:1) → central.api.deps") in api
    assert import_cycles(mods, "edge") == []


def test_from_package_import_name_is_an_edge_to_the_package_only_for_names(tmp_path: Path) -> None:
    mods = _tree(tmp_path, {
        "edge/store/__init__.py": "from edge.store.outbox import Outbox\n",
        "edge/store/outbox.py": "from edge.store import alibi\nclass Outbox: ...\n",
        "edge/store/alibi.py": "from edge.store import Outbox\n",  # a name of the package: an edge to its __init__
        "edge/agent.py": "from edge.store import outbox\n",
    })
    graph = import_graph(mods)
    assert graph["edge.agent"] == {"edge.store.outbox": 1}
    assert graph["edge.store.outbox"] == {"edge.store.alibi": 1}
    assert graph["edge.store.alibi"] == {"edge.store": 1}
    [cycle] = import_cycles(mods, "edge")
    assert "edge.store, edge.store.alibi, edge.store.outbox" in cycle


def test_each_layering_rule_fails_when_broken(tmp_path: Path) -> None:
    mods = _tree(tmp_path, {
        "protocols/bad.py": "import httpx\nimport serial\nfrom cryptography import x509\nimport json\n",
        "protocols/worse.py": "from sync import envelope\n",
        "sync/envelope.py": "import pydantic\nfrom sync.runtime import mqtt\nimport hashlib\n",
        "sync/runtime/__init__.py": "",
        "sync/runtime/mqtt.py": "import pydantic, yaml\nimport paho.mqtt.client\nimport httpx\n"
                                "from sync import envelope\n",
        "edge/agent.py": "import httpx\nfrom central.db import models\nfrom protocols import bad\n",
        "central/db/__init__.py": "",
        "central/db/models.py": "def f():\n    import tools.demo\n    from edge import agent\n",
        "central/api/__init__.py": "",
        "central/api/audit.py": "from central.db import models\n",
        "central/tickets/__init__.py": "",
        "central/tickets/views.py": "from central.api.audit import record\n",
        "central/runner.py": "from central.api import audit\n",
        "central/cli_admin.py": "from central.api import audit\n",
        "tools/demo.py": "import edge.agent, central.runner, floorgate_cli\nfrom tests import services\n",
    })
    problems = layering_violations(mods)
    text = "\n".join(problems)
    expected = [
        "protocols/bad.py:1: protocols.bad imports httpx (protocols may import the stdlib and cryptography, pymodbus, "
        "serial)",
        "protocols/worse.py:1: protocols.worse imports sync.envelope (protocols may import protocols of ours)",
        "sync/envelope.py:1: sync.envelope imports pydantic (sync may import the stdlib and cryptography)",
        "sync/envelope.py:2: sync.envelope imports sync.runtime.mqtt (the pure contract sync must not depend on "
        "sync.runtime)",
        "sync/runtime/mqtt.py:3: sync.runtime.mqtt imports httpx (sync.runtime may import the stdlib and "
        "cryptography, paho, pydantic, yaml)",
        "edge/agent.py:2: edge.agent imports central.db.models (edge may import edge, protocols, sync of ours)",
        "central/db/models.py:2: central.db.models imports tools.demo (central may import central, protocols, sync "
        "of ours)",
        "central/db/models.py:3: central.db.models imports edge.agent",
        "central/tickets/views.py:1: central.tickets.views imports central.api.audit (central's domain must not "
        "import its API layer",
        "tools/demo.py:2: tools.demo imports tests (tools may import central, edge, floorgate_cli, protocols, sync, "
        "tools of ours)",
    ]
    for line in expected:
        assert line in text, f"{line!r} not in:\n{text}"
    assert len(problems) == len(expected), text  # and nothing else: serial, x509, json, hashlib, runner, cli* pass


def test_a_module_above_the_limit_fails_and_migrations_do_not(tmp_path: Path) -> None:
    for rel, lines in {"edge/big.py": 601, "edge/ok.py": 600, "central/migrations/versions/0001_x.py": 5000,
                       "tests/unit/test_big.py": 700, "floorgate_cli.py": 650}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n" * lines, encoding="utf-8")
    for package in ("central", "protocols", "sync", "tools"):
        (tmp_path / package).mkdir(exist_ok=True)
    assert oversized(tmp_path) == [
        "edge/big.py: 601 lines (at most 600; split it along a real seam)",
        "tests/unit/test_big.py: 700 lines (at most 600; split it along a real seam)",
        "floorgate_cli.py: 650 lines (at most 600; split it along a real seam)",
    ]


def test_a_private_attribute_of_a_library_object_fails_and_our_own_do_not(tmp_path: Path) -> None:
    mods = _tree(tmp_path, {
        "sync/runtime/__init__.py": "",
        "sync/runtime/mqtt.py": (
            "import asyncio as _asyncio\n"
            "_LIMIT = 3\n"
            "class Client:\n"
            "    __slots__ = ('_sock',)\n"
            "    _state = 'new'\n"
            "    def __init__(self, inner):\n"
            "        self._inner = inner\n"
            "    def _helper(self): ...\n"
            "    def run(self, other: 'Client'):\n"
            "        self._helper(); other._inner; other._sock; Client._state; _asyncio.sleep\n"
            "        self._inner._client._loop\n"
            "        _local = 1\n"
            "        return self.__class__, self.__dict__, self._inner._connected, other._local\n"
        ),
        "edge/uplink.py": "from sync.runtime import mqtt\nmqtt._LIMIT\nmqtt.Client(None)._inner._misc_task\n",
    })
    assert private_reach_ins(mods) == [
        "edge/uplink.py:3: mqtt.Client(None)._inner._misc_task — _misc_task is defined nowhere in our code: a private "
        "attribute of a library's object (use its public API)",
        "sync/runtime/mqtt.py:11: self._inner._client — _client is defined nowhere in our code: a private attribute "
        "of a library's object (use its public API)",
        "sync/runtime/mqtt.py:11: self._inner._client._loop — _loop is defined nowhere in our code: a private "
        "attribute of a library's object (use its public API)",
        "sync/runtime/mqtt.py:13: other._local — _local is defined nowhere in our code: a private attribute of a "
        "library's object (use its public API)",
        "sync/runtime/mqtt.py:13: self._inner._connected — _connected is defined nowhere in our code: a private "
        "attribute of a library's object (use its public API)",
    ]
