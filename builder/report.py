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
    checks: list[Check] = field(default_factory=list)
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
        lines = [f"verify {self.image} ({self.image_id[:19]}) for {self.target_arch}"]
        for c in self.checks:
            lines.append(f"  {c.status.upper():<4}  {c.name:<22} {c.detail}")
        counts = {s: sum(c.status == s for c in self.checks) for s in ("pass", "fail", "skip")}
        verdict_ = "PASSED" if self.passed else "FAILED"
        lines.append(f"{verdict_}: {counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped in {self.seconds:.1f} s")
        return "\n".join(lines) + "\n"

    def junit(self) -> str:
        suite = ET.Element("testsuite", name=f"sglbuild verify {self.image}", tests=str(len(self.checks)),
                           failures=str(len(self.failed)),
                           skipped=str(sum(c.status == "skip" for c in self.checks)), time=f"{self.seconds:.2f}")
        for c in self.checks:
            case = ET.SubElement(suite, "testcase", classname="sglbuild.verify", name=c.name, time=f"{c.seconds:.2f}")
            if c.status == "fail":
                ET.SubElement(case, "failure", message=c.detail[:500]).text = c.detail
            elif c.status == "skip":
                ET.SubElement(case, "skipped", message=c.detail[:500])
            else:
                ET.SubElement(case, "system-out").text = c.detail
        return ET.tostring(ET.ElementTree(suite).getroot(), encoding="unicode", xml_declaration=True) + "\n"

    def render(self, fmt: str) -> str:
        return {"text": self.text, "junit": self.junit, "json": lambda: json.dumps(self.to_dict(), indent=2) + "\n"}[fmt]()
