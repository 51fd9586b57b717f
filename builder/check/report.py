"""One report model for every check sglbuild runs: verify's and doctor's answers, as text, JSON, JUnit or markdown.

A check passes, warns, fails or is skipped, says why, and, when it does not pass, what to do.
A check judged for one GPU architecture names it (verify judges several at once: one verdict
per architecture from one probe run).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field

STATUSES = ("pass", "warn", "fail", "skip")


@dataclass
class Check:
    id: str
    name: str
    status: str  # "pass" | "warn" | "fail" | "skip"
    detail: str
    hint: str = ""  # what to do, when it does not pass
    arch: str | None = None  # the architecture it was judged for (None: the same for every one)
    seconds: float = 0.0



@dataclass(frozen=True)
class Feature:
    name: str  # "attention triton", "sampling flashinfer", "cuda graphs", ...
    available: bool | None  # None: no evidence either way
    evidence: str

    @property
    def state(self) -> str:
        return {True: "yes", False: "no", None: "?"}[self.available]

    def to_dict(self) -> dict:
        return {"name": self.name, "state": self.state, "available": self.available, "evidence": self.evidence}


@dataclass
class Report:
    kind: str  # "verify" | "doctor"
    subject: str | None  # the image (doctor: None for the host alone)
    image_id: str = ""
    archs: list[str] = field(default_factory=list)  # the architectures judged, in the order given
    arch_source: str = ""  # where they came from: --arch, the image's label, this host's GPU
    checks: list[Check] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)  # installed versions, reported as they are
    features: dict[str, list[Feature]] = field(default_factory=dict)  # per architecture: the feature table (builder.check.features)
    derived: dict[str, list[str]] = field(default_factory=dict)  # per architecture: the flags the evidence supports
    defaults: dict[str, dict] = field(default_factory=dict)  # per architecture: what the image's SGLang picks by itself
    attestations: list[dict] = field(default_factory=list)  # what the registry holds about the image, checked
    seconds: float = 0.0

    @property
    def target_arch(self) -> str:
        return self.archs[0] if self.archs else ""

    @property
    def passed(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    def add(self, id_: str, name: str, status: str, detail: str, hint: str = "", arch: str | None = None) -> Check:
        if status not in STATUSES:
            raise ValueError(f"check status {status!r}")
        check = Check(id_, name, status, detail, hint, arch)
        self.checks.append(check)
        return check

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in STATUSES}

    def to_dict(self) -> dict:
        return {**asdict(self), "features": {arch: [f.to_dict() for f in rows] for arch, rows in self.features.items()},
                "target_arch": self.target_arch, "passed": self.passed}

    # -- text ----------------------------------------------------------------------------------------

    def text(self) -> str:
        return self._doctor_text() if self.kind == "doctor" else self._verify_text()

    def title(self, c: Check) -> str:
        """The check's name, with its architecture where the report judges several."""
        return f"{c.name} ({c.arch})" if c.arch and len(self.archs) > 1 else c.name

    def _line(self, c: Check, width: int) -> str:
        hint = f"  -> {c.hint}" if c.hint and c.status in ("warn", "fail") else ""
        return f"  {c.status.upper():<4}  {self.title(c):<{width}} {c.detail}{hint}"

    def _verify_text(self) -> str:
        archs = ", ".join(self.archs)
        lines = [f"verify {self.subject} ({self.image_id[:19]}) for {archs} ({self.arch_source})"]
        if self.facts:
            lines.append("  versions  " + "; ".join(f"{k} {v}" for k, v in self.facts.items()))
        width = max([22, *(len(self.title(c)) + 1 for c in self.checks)])
        lines += [self._line(c, width) for c in self.checks]
        for arch in self.archs:
            rows = self.features.get(arch) or []
            if rows:
                lines.append(f"  features on {arch}:")
                lines += [f"    {f.name:<28} {f.state:<4} {f.evidence}" for f in rows]
            if arch in self.defaults:
                d = self.defaults[arch]
                lines.append(f"  SGLang's own choice on {arch}: {d.get('summary', '')}")
            if rows or arch in self.derived:
                lines.append(f"  derived for {arch}: {' '.join(self.derived.get(arch) or []) or '(no SGLang server flags to derive)'}")
        for a in self.attestations:
            lines.append(f"  attested  {a.get('summary', '')}")
        n = self.counts()
        warned = f", {n['warn']} warnings" if n["warn"] else ""
        lines.append(f"{'PASSED' if self.passed else 'FAILED'}: {n['pass']} passed{warned}, {n['fail']} failed, "
                     f"{n['skip']} skipped in {self.seconds:.1f} s")
        return "\n".join(lines) + "\n"

    def _doctor_text(self) -> str:
        lines = [f"doctor{' ' + self.subject if self.subject else ''}"]
        lines += [self._line(c, 20) for c in self.checks]
        n = self.counts()
        lines.append(f"{'READY' if self.passed else 'NOT READY'}: {n['pass']} passed, {n['warn']} warnings, "
                     f"{n['fail']} failed, {n['skip']} skipped")
        return "\n".join(lines) + "\n"

    # -- machines and documentation ------------------------------------------------------------------

    def junit(self) -> str:
        suite = ET.Element("testsuite", name=f"sglbuild {self.kind} {self.subject or ''}".strip(), tests=str(len(self.checks)),
                           failures=str(len(self.failed)), skipped=str(self.counts()["skip"]), time=f"{self.seconds:.2f}")
        props = ET.SubElement(suite, "properties")
        properties = [("archs", f"{' '.join(self.archs)} ({self.arch_source})"), *self.facts.items()]
        for arch in self.archs:
            properties += [(f"feature {f.name} ({arch})", f"{f.state}: {f.evidence}") for f in self.features.get(arch) or []]
            properties.append((f"derived ({arch})", " ".join(self.derived.get(arch) or [])))
        for name, value in properties:
            ET.SubElement(props, "property", name=name, value=value)
        for c in self.checks:
            case = ET.SubElement(suite, "testcase", classname=f"sglbuild.{self.kind}", name=self.title(c), time=f"{c.seconds:.2f}")
            if c.status == "fail":
                ET.SubElement(case, "failure", message=c.detail[:500]).text = c.detail
            elif c.status == "skip":
                ET.SubElement(case, "skipped", message=c.detail[:500])
            else:
                ET.SubElement(case, "system-out").text = c.detail
        return ET.tostring(ET.ElementTree(suite).getroot(), encoding="unicode", xml_declaration=True) + "\n"

    def markdown(self) -> str:
        """The feature table of each architecture, for documentation: generated from the image's evidence."""
        out = []
        for arch in self.archs:
            lines = [f"| on {arch} | available | evidence |", "|---|---|---|"]
            lines += [f"| {f.name} | {f.state} | {f.evidence.replace('|', '/')} |"
                      for f in self.features.get(arch) or [] if f.available is not None]
            lines.append("")
            if arch in self.defaults:
                lines.append(f"SGLang's own choice on {arch}: {self.defaults[arch].get('summary', '')}")
                lines.append("")
            lines.append(f"Derived for {arch}: `{' '.join(self.derived.get(arch) or [])}`")
            out.append("\n".join(lines))
        return "\n\n".join(out) + "\n"

    def render(self, fmt: str) -> str:
        return {"text": self.text, "junit": self.junit, "json": lambda: json.dumps(self.to_dict(), indent=2) + "\n",
                "markdown": self.markdown}[fmt]()
