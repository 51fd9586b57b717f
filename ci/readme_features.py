#!/usr/bin/env python3
"""Regenerate the README's feature table from the default image's evidence (`sglbuild verify --format markdown`).

Usage: ci/readme_features.py [IMAGE]   (make readme-features; the tests check the README holds this output)
"""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
image = sys.argv[1] if len(sys.argv) > 1 else "sglang:blackwell-final-v2"
table = subprocess.run([sys.executable, "-m", "builder.cli", "verify", image, "--format", "markdown"],
                       cwd=ROOT, capture_output=True, text=True, check=True).stdout
readme = ROOT / "README.md"
text, n = re.subn(r"(<!-- features:begin -->\n).*?(<!-- features:end -->)", lambda m: m.group(1) + table + m.group(2),
                  readme.read_text(), flags=re.S)
if n != 1:
    sys.exit("README.md has no <!-- features:begin --> ... <!-- features:end --> section")
readme.write_text(text)
print(f"README.md: feature table regenerated from {image}")
