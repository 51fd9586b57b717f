#!/usr/bin/env python3
"""Regenerate the documented feature table (docs/verify.md) from the default image's evidence (`sglbuild verify --format markdown`).

Usage: ci/features_table.py [IMAGE]   (make features-table; the tests check docs/verify.md holds this output)
"""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
image = sys.argv[1] if len(sys.argv) > 1 else "sglang:blackwell-final-v2"
table = subprocess.run([sys.executable, "-m", "builder.cli", "verify", image, "--format", "markdown"],
                       cwd=ROOT, capture_output=True, text=True, check=True).stdout
doc = ROOT / "docs" / "verify.md"
text, n = re.subn(r"(<!-- features:begin -->\n).*?(<!-- features:end -->)", lambda m: m.group(1) + table + m.group(2),
                  doc.read_text(), flags=re.S)
if n != 1:
    sys.exit("docs/verify.md has no <!-- features:begin --> ... <!-- features:end --> section")
doc.write_text(text)
print(f"docs/verify.md: feature table regenerated from {image}")
