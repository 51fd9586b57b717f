"""The house: rooms in the pipeline's order, each importing only rooms before it; no import loop; the engine's objects
stay in it; each command in its step's room.

The rule, as the README states it: inputs (profile, lock, wheelhouse) -> engine (the door to Docker) -> assemble (plan,
base, stages) -> check (verify, evidence, reproducibility) -> ship (gate, tag, push, serve) -> pipeline (the straight
line) -> cli. A module imports modules of its own room or of a room before it, never one of a later room or of another
room of the same rank; every room may import the base modules. Code that runs inside images (probe, helpers) imports
only the standard library and the base modules it is packed with.

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
# The rooms in order: a module imports only its own room or rooms before it (probe and helpers stand alone, beside base).
ORDER = ["base", "inputs", "engine", "assemble", "check", "ship", "pipeline", "cli"]
STANDALONE = {"probe", "helpers"}
BASE = {"__init__", "errors", "contracts", "state", "ui", "oci", "sign"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or (len(parts) == 2 and parts[1] in BASE):
        return "base"
    return parts[1]


def allowed(importer: str, imported: str) -> bool:
    """The rule for an import from room IMPORTER of room IMPORTED."""
    if importer == imported or imported == "base":
        return True
    if importer in STANDALONE or imported in STANDALONE:
        return importer not in STANDALONE and imported == "probe"  # the host runs and reads the probe; the probe runs alone
    return ORDER.index(imported) < ORDER.index(importer)


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
    rooms = {room(m) for m in graph()}
    assert rooms <= set(ORDER) | STANDALONE, f"a room the rule does not name: {sorted(rooms - set(ORDER) - STANDALONE)}"
    wrong = [f"{m} ({room(m)}) imports {i} ({room(i)})" for m, deps in graph().items() for i in sorted(deps) if not allowed(room(m), room(i))]
    assert not wrong, "\n".join(wrong)


def test_the_rule_refuses_what_it_must():
    assert allowed("check", "assemble") and allowed("ship", "check") and allowed("pipeline", "ship") and allowed("cli", "pipeline")
    assert not allowed("assemble", "check")  # the build does not judge: the check room reads what it made
    assert not allowed("ship", "pipeline") and not allowed("inputs", "engine") and allowed("engine", "inputs")
    assert not allowed("probe", "inputs") and not allowed("helpers", "probe") and allowed("check", "probe")


def test_code_that_runs_in_images_imports_nothing_of_the_host_side():
    wrong = [f"{m} imports {i}" for m, deps in graph().items() if room(m) in STANDALONE
             for i in deps if room(i) not in (room(m), "base") or module_name(BUILDER / "state.py") == i]
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


def command_imports() -> dict[str, set[str]]:
    """Each CLI command (by its name on the command line) and the builder modules its function imports."""
    tree = ast.parse((BUILDER / "cli.py").read_text())
    out = {}
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        names = [d for d in node.decorator_list if isinstance(d, ast.Call) and ast.unparse(d.func) == "cli.command"]
        if not names:
            continue
        args = [a.value for a in names[0].args if isinstance(a, ast.Constant)]
        name = args[0] if args else node.name.replace("_", "-")
        found = set()
        for sub in ast.walk(node):
            if isinstance(sub, ast.ImportFrom) and sub.level:
                base = "builder" + ("." + sub.module if sub.module else "")
                found |= {_existing(f"{base}.{a.name}") if _is_module(f"{base}.{a.name}") else _existing(base) for a in sub.names}
        out[name] = found
    return out


def test_each_command_lives_in_its_steps_room():
    """A newcomer finds a command's code under the name of its step: each command imports the one module that does its
    work (and may import what prints it), and every command is listed here."""
    homes = {"lock": "inputs.locking", "fetch": "inputs.wheelhouse", "render": "pipeline", "plan": "pipeline",
             "build": "pipeline", "verify": "pipeline", "inspect": "pipeline", "push": "pipeline", "archs": "check.archs",
             "diff": "check.diff", "doctor": "check.doctor", "gc": "assemble.gc", "keygen": "sign", "promote": "ship.registry", "join": "pipeline",
             "serve": "ship.serve"}
    commands = command_imports()
    assert set(commands) == set(homes), f"commands without a home here, or homes without a command: {set(commands) ^ set(homes)}"
    for command, home in homes.items():
        assert (BUILDER / (home.replace(".", "/") + ".py")).is_file(), home
        assert f"builder.{home}" in commands[command], f"sglbuild {command} does not call builder/{home.replace('.', '/')}.py"


def named_modules() -> list[tuple[str, str]]:
    """Every module (or name in one) the code's docstrings, comments and messages name: (where, what)."""
    out = []
    for path in sorted(BUILDER.rglob("*.py")):
        text = path.read_text()
        where = str(path.relative_to(ROOT))
        out += [(where, m.group(0).replace("/", ".").removesuffix(".py")) for m in re.finditer(r"\bbuilder(?:[./][A-Za-z_]\w*)+(?:\.py)?", text)]
        out += [(where, m.group(1)) for m in re.finditer(r"(?<![\w/.])([a-z_][a-z0-9_]*\.py)\b", text)]
    return out


def resolves(name: str) -> bool:
    """builder.ROOM.MODULE (and a name in it, through its attributes), or a bare FILE.py somewhere in builder/."""
    import importlib

    if not name.startswith("builder"):
        return any(BUILDER.rglob(name))
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if _is_module(".".join(parts[:n])):
            obj = importlib.import_module(".".join(parts[:n]))
            for attr in parts[n:]:
                if not hasattr(obj, attr):
                    return False
                obj = getattr(obj, attr)
            return True
    return False


def test_every_module_the_code_names_exists():
    """Docstrings and messages name modules, functions and files; each of them exists (after a move, the old names go)."""
    stale = [f"{where}: {name}" for where, name in named_modules() if not resolves(name)]
    assert not stale, stale


def test_the_name_check_finds_a_stale_name():
    assert resolves("builder.assemble.plan.make_plan") and resolves("stages.py") and resolves("builder.check.reply")
    assert not resolves("builder.build.plan") and not resolves("tag_helpers.py") and not resolves("builder.check.reply.nothing_here")
