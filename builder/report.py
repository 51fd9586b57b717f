"""verify's report: each check passed, failed or skipped, with why; as text, JSON or JUnit."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field


@dataclass
class Check:
    id: str
    name: str
    status: str  # "pass" | "fail" | "skip"
    detail: str
    seconds: float = 0.0


@dataclass
class Report:
    image: str
    image_id: str
    target_arch: str
    arch_source: str = ""  # where the architecture came from: --arch, the image's label, this host's GPU
    checks: list[Check] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)  # installed versions, reported as they are
    features: list[dict] = field(default_factory=list)  # the feature table (builder.features), as dicts
    derived: list[str] = field(default_factory=list)  # the flags the evidence supports (builder.features.derive)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    def add(self, id_: str, name: str, status: str, detail: str) -> None:
        self.checks.append(Check(id_, name, status, detail))

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}

    def text(self) -> str:
        lines = [f"verify {self.image} ({self.image_id[:19]}) for {self.target_arch} ({self.arch_source})"]
        if self.facts:
            lines.append("  versions  " + "; ".join(f"{k} {v}" for k, v in self.facts.items()))
        for c in self.checks:
            lines.append(f"  {c.status.upper():<4}  {c.name:<22} {c.detail}")
        if self.features:
            lines.append(f"  features on {self.target_arch}:")
            lines += [f"    {f['name']:<28} {f['state']:<4} {f['evidence']}" for f in self.features]
            lines.append(f"  derived for {self.target_arch}: {' '.join(self.derived) or '(no SGLang server flags to derive)'}")
        counts = {s: sum(c.status == s for c in self.checks) for s in ("pass", "fail", "skip")}
        verdict_ = "PASSED" if self.passed else "FAILED"
        lines.append(f"{verdict_}: {counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped in {self.seconds:.1f} s")
        return "\n".join(lines) + "\n"

    def junit(self) -> str:
        suite = ET.Element("testsuite", name=f"sglbuild verify {self.image}", tests=str(len(self.checks)),
                           failures=str(len(self.failed)),
                           skipped=str(sum(c.status == "skip" for c in self.checks)), time=f"{self.seconds:.2f}")
        props = ET.SubElement(suite, "properties")
        for name, value in [("arch", f"{self.target_arch} ({self.arch_source})"), *self.facts.items(),
                            *((f"feature {f['name']}", f"{f['state']}: {f['evidence']}") for f in self.features),
                            ("derived", " ".join(self.derived))]:
            ET.SubElement(props, "property", name=name, value=value)
        for c in self.checks:
            case = ET.SubElement(suite, "testcase", classname="sglbuild.verify", name=c.name, time=f"{c.seconds:.2f}")
            if c.status == "fail":
                ET.SubElement(case, "failure", message=c.detail[:500]).text = c.detail
            elif c.status == "skip":
                ET.SubElement(case, "skipped", message=c.detail[:500])
            else:
                ET.SubElement(case, "system-out").text = c.detail
        return ET.tostring(ET.ElementTree(suite).getroot(), encoding="unicode", xml_declaration=True) + "\n"

    def markdown(self) -> str:
        """The feature table, for documentation: generated from the image's evidence, never written by hand."""
        lines = [f"| on {self.target_arch} | available | evidence |", "|---|---|---|"]
        lines += [f"| {f['name']} | {f['state']} | {f['evidence'].replace('|', '/')} |" for f in self.features if f["available"] is not None]
        lines.append("")
        lines.append(f"Derived for {self.target_arch}: `{' '.join(self.derived)}`")
        return "\n".join(lines) + "\n"

    def render(self, fmt: str) -> str:
        return {"text": self.text, "junit": self.junit, "json": lambda: json.dumps(self.to_dict(), indent=2) + "\n",
                "markdown": self.markdown}[fmt]()
