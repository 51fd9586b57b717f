"""Helpers the build runs inside its own steps: standard library only, Python 3.8 or later.

The build serves this package to each step as a small wheel built from these files,
pinned by sha256 in the rendered Dockerfile like every other wheel, installed into /tmp
with pip and removed at the end of the step: nothing of it stays in an image.
"""
