"""The house: rooms by pipeline step, each importing only the ones before it; no import loop; the engine's objects stay in it.

Read from the sources (every import, at module level or inside a function; imports under
``if TYPE_CHECKING:`` are for the type checker and left out).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from support import ROOT

BUILDER = ROOT / "builder"
# Each room's rank: a module imports only modules of its rank or a lower one.
RANKS = {"base": 0, "probe": 0, "helpers": 0, "inputs": 1, "engine": 1, "check": 2, "build": 3, "ship": 4, "cli": 5}
BASE = {"__init__", "errors", "contracts", "state", "ui", "oci", "sign"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or (len(parts) == 2 and parts[1] in BASE):
        return "base"
    return parts[1]


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for child in node.body for n in ast.walk(child)}
    return skip


def imports_of(path: Path) -> set[str]:
    """The builder modules PATH imports (resolved to modules, not names inside them)."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_nodes(tree)
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("builder")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if not target.startswith("builder"):
                continue
            for alias in node.names:  # `from . import guard` may name a module
                candidate = f"{target}.{alias.name}"
                found.add(candidate if _is_module(candidate) else target)
    return {_existing(m) for m in found}


def _is_module(name: str) -> bool:
    p = ROOT.joinpath(*name.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def _existing(name: str) -> str:
    while not _is_module(name):
        name = name.rpartition(".")[0]
    return name


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) - {module_name(p)} for p in sorted(BUILDER.rglob("*.py"))}


def test_each_room_imports_only_the_rooms_before_it():
    wrong = [f"{m} ({room(m)}) imports {i} ({room(i)})" for m, deps in graph().items() for i in sorted(deps)
             if RANKS[room(i)] > RANKS[room(m)] and not (room(m) in ("probe", "helpers") and room(i) == "base")]
    assert not wrong, "\n".join(wrong)


def test_code_that_runs_in_images_imports_nothing_of_the_host_side():
    wrong = [f"{m} imports {i}" for m, deps in graph().items() if room(m) in ("probe", "helpers")
             for i in deps if room(i) not in ("probe", "base") or module_name(BUILDER / "state.py") == i]
    assert not wrong, wrong


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle of EDGES, as a path that ends where it starts, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_loop_in_builder():
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_loop_finder_finds_a_loop():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("pattern, where", [
    (r"\.attrs\b", "docker-py's objects"),
    (r"^\s*(import docker|from docker\b)", "docker-py"),
])
def test_the_engines_objects_stay_in_the_engine_package(pattern, where):
    outside = [f"{p.relative_to(ROOT)}:{n}" for p in sorted(BUILDER.rglob("*.py")) if "engine" not in p.relative_to(BUILDER).parts
               for n, line in enumerate(p.read_text().splitlines(), 1) if re.search(pattern, line)]
    assert not outside, f"{where} outside builder/engine: {outside}"


def test_each_command_lives_in_its_steps_room():
    """A newcomer finds a command's code under the name of its step."""
    homes = {"lock": "inputs/lock.py", "fetch": "inputs/wheelhouse.py", "render": "build/plan.py", "plan": "build/plan.py",
             "build": "build/stages.py", "verify": "check/verify.py", "archs": "check/archs.py", "diff": "check/diff.py",
             "inspect": "check/inspect.py", "doctor": "check/doctor.py", "gc": "build/gc.py", "push": "ship/registry.py",
             "promote": "ship/registry.py", "serve": "ship/serve.py"}
    cli = (BUILDER / "cli.py").read_text()
    for command, home in homes.items():
        assert (BUILDER / home).is_file(), home
        body = re.search(rf"^def {command}\w*\(.*?(?=^@cli\.command|^def main)", cli, re.S | re.M)
        assert body, command
        module = "." + home.removesuffix(".py").replace("/", ".")
        via_plan = home == "build/plan.py" and "ctx.plan(" in body.group(0)  # Context.plan makes the plan (build/plan.py)
        assert f"from {module} import" in body.group(0) or via_plan, f"sglbuild {command} does not call {home}"
