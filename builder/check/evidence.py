"""Step 5b, evidence: a derived target's server flags, from what its own image can run on the target.

For ``[serve] preset = "derived"`` the final stage (whose entrypoint carries the flags) waits
for evidence: the stages up to the last one that installs wheels are built, the probe reads
that image (its libraries' code for gpu_arch, its SGLang's parser, the JIT probe's compiles),
:func:`builder.check.features.derive` picks the fastest configuration proven for the target,
and the plan is completed with those flags. The answer depends only on that stage's image, so
it is kept under the stage's key: ``sglbuild plan`` and ``render`` show the flags once it is known.

The evidence image is probed with the final stage's environment, so its JIT probe compiled with
exactly what the final image compiles with when the final layer holds only sglbuild's own files:
the gate then reuses that compile (:func:`evidence_jit`) instead of making it again.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING

from .. import __version__
from ..contracts import PROBE_VERSION, JitAnswer
from .features import derive, features, on_every, sglang_default
from .gpucode import ImageGpuCode
from .reply import kept_reply, static_reply
from ..inputs.serving import server_flags
from ..state import remember, remembered
from ..ui import Reporter
from ..assemble.plan import Plan

if TYPE_CHECKING:
    from ..engine import Engine


def _key(plan: Plan) -> str:
    return f"{__version__}:{PROBE_VERSION}:{plan.evidence_stage.key}:{','.join(plan.archs)}"


def cached(plan: Plan) -> tuple[str, ...] | None:
    """The flags derived for this plan's evidence stage on this machine before, if any."""
    flags = remembered("evidence", _key(plan))
    return tuple(flags) if flags is not None else None


def derived_flags(engine: Engine, image: str, archs: tuple[str, ...], sglang_version: str,
                  environment: dict[str, str] | None = None) -> tuple[tuple[str, ...], list]:
    """The flags IMAGE's evidence (probed with ENVIRONMENT) supports on every one of ARCHS, and the feature table behind them."""
    reply = static_reply(engine, engine.images.get(image), list(archs), None, environment=environment)
    code = ImageGpuCode.of(reply)
    rows = on_every({arch: features(reply, code, arch) for arch in archs})
    return tuple(server_flags(derive(rows, sglang_default(reply, archs)), sglang_version)), rows


def complete(engine: Engine, plan: Plan, evidence_image: str, reporter: Reporter, *, fresh: bool = False) -> Plan:
    """PLAN completed with the flags EVIDENCE_IMAGE (its evidence stage's image) supports; from the cache unless FRESH."""
    known = None if fresh else cached(plan)
    if known is not None:
        reporter.step("evidence", "reused", f"derived flags for {','.join(plan.archs)}: {' '.join(known)}")
        return plan.with_derived(known)
    sglang = plan.lock.wheel("sglang")
    t0 = time.monotonic()
    flags, rows = derived_flags(engine, evidence_image, plan.archs, sglang.version if sglang else "0", dict(plan.target.env))
    chosen = ", ".join(f.name for f in rows if f.available and f.name.startswith(("attention", "sampling")))
    reporter.step("evidence", "derived", f"{time.monotonic() - t0:5.1f} s  {plan.evidence_stage.name} runs on {','.join(plan.archs)}: "
                  f"{chosen or 'nothing proven'}; flags: {' '.join(flags)}")
    remember("evidence", _key(plan), list(flags))
    return plan.with_derived(flags)


def evidence_jit(engine: Engine, plan: Plan, final_image: str, evidence_image: str) -> dict[str, JitAnswer] | None:
    """The JIT probe's answer the evidence step got from EVIDENCE_IMAGE, valid for FINAL_IMAGE built on it; None unless
    every condition holds (the final image's own probe then compiles):

    - FINAL_IMAGE's layers are EVIDENCE_IMAGE's and one more, the final stage's: its one step writes only sglbuild's
      files (the lock, the SBOM, the entrypoint, byte-code of the modules Python imports at start), so no
      profile's ``post_install`` command may have run in it;
    - its environment is the evidence image's with the final stage's variables, those the evidence was probed with;
    - this machine holds that probe's answer for the same probe code and every architecture of the plan.
    """
    if not (plan.target.serve and plan.target.serve.derived) or plan.target.post_install:
        return None
    final, evidence = engine.images.get(final_image), engine.images.get(evidence_image)
    if final.layers[:-1] != evidence.layers or len(final.layers) != len(evidence.layers) + 1:
        return None
    environment = dict(plan.target.env)
    if final.config.environment != {**evidence.config.environment, **environment}:
        return None
    kept = kept_reply(evidence, list(plan.archs), None, environment)
    if kept is None or kept.jit is None or not all(arch in kept.jit for arch in plan.archs):
        return None
    return {arch: replace(kept.jit[arch], compiled_in=evidence.id) for arch in plan.archs}
