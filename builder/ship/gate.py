"""Step 7, gate: the target's smoke tests and verify's static checks, before any human tag moves.

Both read the same image, so they run side by side. A pass is recorded (:mod:`builder.state`)
with the image's content ID and the gate's key; an image with the same content that already
passed the same gate here is not tested again. A derived target's verify reuses the JIT compile
its evidence step made in the stage below (:func:`builder.check.evidence.evidence_jit` says when
that holds): under emulation that compile is most of a verify.
"""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..check.evidence import evidence_jit
from ..check.report import Report
from ..check.verify import verify
from ..errors import SmokeTestFailed, VerifyFailed
from ..state import passed_gate, record_verified
from ..ui import Reporter

if TYPE_CHECKING:
    from ..assemble.plan import Plan
    from ..assemble.stages import Built
    from ..engine import Engine


@dataclass(frozen=True)
class SmokeResult:
    command: str
    exit_code: int
    output: str  # its last 2000 characters
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Gated:
    smoke: list[SmokeResult] = field(default_factory=list)
    report: Report | None = None  # verify's (None: the pass was inherited)
    reused_from: str | None = None  # the image whose pass this one inherits (same content, same gate)


def gate_key(plan: Plan) -> str:
    """What a pass depends on besides the image: the smoke commands and this sglbuild's checks."""
    return hashlib.sha256(json.dumps([__version__, list(plan.target.smoke)]).encode()).hexdigest()


def gate(engine: Engine, built: Built, reporter: Reporter) -> Gated:
    """Raise SmokeTestFailed or VerifyFailed unless BUILT's image passes; record the pass. A derived target's verify
    reuses its evidence stage's JIT compile where that holds (:func:`builder.check.evidence.evidence_jit`)."""
    plan, image_id = built.plan, built.image_id
    key = gate_key(plan)
    earlier = passed_gate(built.content_id, key)
    if earlier is not None:
        same = "this image" if earlier == image_id else f"{earlier[:19]} (only provenance labels differ)"
        reporter.step("gate", "reused", f"smoke tests and verify passed for {same}")
        record_verified(image_id, gpu_checked=False, content_id=built.content_id, gate_key=key)
        return Gated(reused_from=earlier)
    with ThreadPoolExecutor(max_workers=2) as pool:
        smoke = pool.submit(smoke_test, engine, image_id, plan, reporter)
        checks = pool.submit(_verify, engine, image_id, plan, reporter, built.evidence_image)
        result = Gated(smoke.result(), checks.result())
    record_verified(image_id, gpu_checked=False, content_id=built.content_id, gate_key=key)
    return result


def _verify(engine: Engine, image_id: str, plan: Plan, reporter: Reporter, evidence_image: str | None) -> Report:
    jit = evidence_jit(engine, plan, image_id, evidence_image) if evidence_image else None
    if jit is not None:
        reporter.step("verify", "reused", f"the JIT probe's compile from the evidence stage {evidence_image[:19]}: the same files")
    report = verify(engine, image_id, gpu="off", repo_lock=plan.lock, record=False, jit=jit)  # recorded with the smoke tests' pass
    for c in report.checks:
        if c.status != "skip":
            reporter.step("verify", "passed" if c.status == "pass" else "failed", f"{c.name}: {c.detail[:120]}")
    failed = [c for c in report.checks if c.status == "fail"]
    if failed:
        raise VerifyFailed(f"verify failed: {failed[0].name}: {failed[0].detail[:300]}",
                           f"the image keeps only its immutable tag; {plan.human_tag} was not moved")
    return report


def smoke_test(engine: Engine, image_id: str, plan: Plan, reporter: Reporter) -> list[SmokeResult]:
    """Run the target's smoke commands in the image (in parallel, without network).

    ``SGLBUILD_FLAGS`` (JSON) gives a command the image's default server flags to check.
    Raises on the first failure, in the profile's order.
    """

    def one(command: str) -> SmokeResult:
        t0 = time.monotonic()
        code, out = engine.containers.run(image_id, [command], entrypoint=["/bin/sh", "-c"],
                                          environment={"SGLBUILD_FLAGS": json.dumps(list(plan.serve_flags))})
        return SmokeResult(command, code, out.strip()[-2000:], round(time.monotonic() - t0, 2))

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(one, plan.target.smoke))
    for r in results:
        lines = r.output.splitlines() or ["(no output)"]
        if r.exit_code != 0:
            reporter.step("smoke", "failed", r.command)
            raise SmokeTestFailed(f"smoke test failed (exit {r.exit_code}): {r.command!r}: {lines[-1][:300]}",
                                  f"the image keeps only its immutable tag; {plan.human_tag} was not moved")
        reporter.step("smoke", "passed", f"{r.seconds:5.1f} s  {lines[-1][:100]}")
    return results
