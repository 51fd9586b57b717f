"""Code that runs inside images: standard library only, Python 3.8 or later.

sglbuild mounts its own package read-only into an image and runs
``python3 -m builder.probe COMMAND`` with the image's interpreter, so one third-party
import here would break verify on every image. ``tests/test_probe_isolation.py`` imports
every module of this package with ``python -I -S`` to hold that line.
"""
