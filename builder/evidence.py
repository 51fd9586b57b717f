"""Step 5b, evidence: a derived target's server flags, from what its own image can run on the target.

For ``[serve] preset = "derived"`` the final stage (whose entrypoint carries the flags) waits
for evidence: the stages up to the last one that installs wheels are built, the probe reads
that image (its libraries' code for gpu_arch, its SGLang's parser, the JIT probe's compiles),
:func:`builder.features.derive` picks the fastest configuration proven for the target, and the
plan is completed with those flags. The answer depends only on that stage's image, so it is
kept under the stage's key: ``sglbuild plan`` and ``render`` show the flags once it is known.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .contracts import StaticReply
from .features import derive, features
from .flags import server_flags
from .plan import Plan
from .trust import state_dir
from .ui import Reporter

if TYPE_CHECKING:
    from .engine import Engine


def _cache_file() -> Path:
    return state_dir() / "evidence.json"


def _key(plan: Plan) -> str:
    return f"{__version__}:{plan.evidence_stage.key}:{plan.target.gpu_arch}"


def cached(plan: Plan) -> tuple[str, ...] | None:
    """The flags derived for this plan's evidence stage on this machine before, if any."""
    try:
        flags = json.loads(_cache_file().read_text()).get(_key(plan))
    except (OSError, ValueError):
        return None
    return tuple(flags) if flags is not None else None


def _remember(plan: Plan, flags: tuple[str, ...]) -> None:
    path = _cache_file()
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    known[_key(plan)] = list(flags)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(known, indent=2, sort_keys=True))
    tmp.replace(path)


def derived_flags(engine: Engine, image: str, arch: str, sglang_version: str) -> tuple[tuple[str, ...], list]:
    """The flags IMAGE's evidence supports on ARCH, and the feature table behind them."""
    from .verify import _relative

    reply = StaticReply.from_dict(engine.containers.probe(image, ["static", "--target", arch]))
    libs = {_relative(c.path, reply.site_packages): c for c in reply.libraries}
    rows = features(reply, libs, arch)
    return tuple(server_flags(derive(rows), sglang_version)), rows


def complete(engine: Engine, plan: Plan, evidence_image: str, reporter: Reporter, *, fresh: bool = False) -> Plan:
    """PLAN completed with the flags EVIDENCE_IMAGE (its evidence stage's image) supports; from the cache unless FRESH."""
    known = None if fresh else cached(plan)
    if known is not None:
        reporter.step("evidence", "reused", f"derived flags for {plan.target.gpu_arch}: {' '.join(known)}")
        return plan.with_derived(known)
    sglang = plan.lock.wheel("sglang")
    flags, rows = derived_flags(engine, evidence_image, plan.target.gpu_arch, sglang.version if sglang else "0")
    chosen = ", ".join(f.name for f in rows if f.available and f.name.startswith(("attention", "sampling")))
    reporter.step("evidence", "derived", f"{plan.evidence_stage.name} runs on {plan.target.gpu_arch}: {chosen or 'nothing proven'}; "
                  f"flags: {' '.join(flags)}")
    _remember(plan, flags)
    return plan.with_derived(flags)
