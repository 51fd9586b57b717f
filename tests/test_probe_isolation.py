"""Code that runs inside images imports nothing but the standard library (and its own package).

sglbuild mounts builder/ into arbitrary images and runs the probe with their Python; the build
runs builder/helpers inside its steps. One third-party import there breaks verify on every image.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import ROOT

IN_IMAGE = sorted([*(ROOT / "builder" / "probe").glob("*.py"), *(ROOT / "builder" / "helpers").glob("*.py"),
                   ROOT / "builder" / "contracts.py", ROOT / "builder" / "errors.py", ROOT / "builder" / "__init__.py"])
ALLOWED_OWN = {"builder", "builder.contracts", "builder.errors", "builder.probe"}
# The image's own packages, which the probe exists to examine: imported inside the functions that
# examine them, never at module level.
IMAGE_PACKAGES = {"torch", "sgl_kernel", "sglang", "triton", "flashinfer"}


def foreign_imports(path: Path, root: Path = ROOT) -> list[str]:
    """What PATH imports from outside the standard library and its allowed own modules."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    tree = ast.parse(path.read_text())
    inside_functions = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in ast.walk(f)}
    names = set()
    for node in ast.walk(tree):
        if id(node) in inside_functions and isinstance(node, (ast.Import, ast.ImportFrom)) and not getattr(node, "level", 0) \
                and (node.names[0].name if isinstance(node, ast.Import) else node.module).split(".")[0] in IMAGE_PACKAGES:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's own package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                names.add(f"{base}.{node.module}" if node.module else base)
            else:
                names.add(node.module)
    own = lambda n: n in ALLOWED_OWN or n.startswith("builder.probe.")  # noqa: E731
    return sorted(n for n in names if not (own(n) if n.split(".")[0] == "builder" else n.split(".")[0] in sys.stdlib_module_names))


@pytest.mark.parametrize("path", IN_IMAGE, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_only_the_standard_library(path):
    assert foreign_imports(path) == [], f"{path.name}: code that runs inside images must use the standard library only"


def test_the_probe_imports_in_an_isolated_interpreter():
    """`python -I -S`: no site-packages, no user paths, no PYTHONPATH; only the package itself on the path."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "import builder.probe.__main__, builder.probe.static, builder.probe.gpu, builder.probe.flags, builder.probe.fatbin; "
            "third = sorted(m for m in sys.modules if m.split('.')[0] not in (*sys.stdlib_module_names, 'builder', '__main__')); "
            "print(third); sys.exit(1 if third else 0)")
    r = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(ROOT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    entry = "import sys; sys.path.insert(0, sys.argv[1]); from builder.probe.__main__ import main; sys.exit(main(['nonsense']))"
    r = subprocess.run([sys.executable, "-I", "-S", "-c", entry, str(ROOT)], capture_output=True, text=True)
    assert r.returncode == 1 and '"probe_error": "unknown probe command' in r.stdout  # the entry point answers, in JSON


def test_no_jit_leaves_out_the_jit_probe_and_only_it():
    """`static --no-jit` (the gate, holding the evidence stage's compile) runs everything but the JIT probe; without it,
    the JIT probe answers for each target. Run for real, in this interpreter's environment."""
    def static(*extra):
        r = subprocess.run([sys.executable, "-m", "builder.probe", "static", "--target", "sm_100,sm_120", *extra], cwd=ROOT,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout[-500:] + r.stderr[-500:]
        return json.loads(r.stdout.splitlines()[-1])

    full, skipped = static(), static("--no-jit")
    assert set(full["jit"]) == {"sm_100", "sm_120"} and all(set(a) >= {"triton", "flashinfer"} for a in full["jit"].values())
    assert skipped["jit"] is None
    assert set(skipped) == set(full)
    assert skipped["dists"] == full["dists"] and skipped["libraries"] == full["libraries"]


def _sglang(root: Path, init: str, server_args: str) -> Path:
    """A stand-in sglang under ROOT (with its dist-info, as pip leaves it): its __init__ and its server_args module."""
    (root / "sglang" / "srt").mkdir(parents=True)
    (root / "sglang" / "__init__.py").write_text(init)
    (root / "sglang" / "srt" / "__init__.py").write_text("")
    (root / "sglang" / "srt" / "server_args.py").write_text(server_args)
    (root / "sglang-9.9.dist-info").mkdir()
    (root / "sglang-9.9.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: sglang\nVersion: 9.9\n")
    return root


_SERVER_ARGS = ("class ServerArgs:\n    @staticmethod\n    def add_cli_args(p):\n        p.add_argument('--model-path')\n"
                "        p.add_argument('--attention-backend', choices=['flashinfer', 'triton'])\n")


@pytest.mark.parametrize("case", ["works", "parser fails", "import fails"])
def test_the_parsers_child_answers_for_import_sglang_and_a_child_of_its_own_where_it_failed(tmp_path, case):
    """The probe asks `import sglang` through the flag parser's child (one emulated SGLang import, not two). Where that
    child fails, the import is asked alone: a parser that cannot import must not read as an SGLang that cannot."""
    init, server_args = {"works": ("__version__ = '9.9'\n", _SERVER_ARGS),
                         "parser fails": ("__version__ = '9.9'\n", "raise ImportError('no module named vllm_stub')\n"),
                         "import fails": ("raise RuntimeError('sglang cannot start here')\n", _SERVER_ARGS)}[case]
    _sglang(tmp_path, init, server_args)
    r = subprocess.run([sys.executable, "-m", "builder.probe", "static", "--flags", '["--attention-backend", "triton"]'], cwd=ROOT,
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": f"{ROOT}:{tmp_path}"})
    assert r.returncode == 0, r.stdout[-500:] + r.stderr[-500:]
    answer = json.loads(r.stdout.splitlines()[-1])
    sglang, flags = answer["imports"]["sglang"], answer["flags"]
    if case == "works":
        assert sglang == {"ok": True, "value": {"version": "9.9"}, "error": None}
        assert flags["ok"] and flags["value"]["attention_backend"] == "triton" and answer["server_options"]["attention_backend"] == ["flashinfer", "triton"]
    elif case == "parser fails":
        assert sglang == {"ok": True, "value": {"version": "9.9"}, "error": None}
        assert not flags["ok"] and "vllm_stub" in flags["error"]
    else:
        assert not sglang["ok"] and sglang["error"] == "RuntimeError: sglang cannot start here"
        assert not flags["ok"] and "sglang cannot start here" in flags["error"]


def test_the_check_catches_third_party_and_foreign_own_imports(tmp_path):
    bad = tmp_path / "builder" / "probe" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("import json\nimport docker.errors\nfrom ..contracts import GpuCode\nfrom ..engine import connect\nfrom .fatbin import scan_tree\n")
    assert foreign_imports(bad, tmp_path) == ["builder.engine", "docker.errors"]
