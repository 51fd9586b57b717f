"""Steps 1 to 3: what an image is made of.

The profile (``sglbuild.toml``) and its targets; the lock (its data model, ``lockfile``; the
``lock`` command, ``lock``; resolution, ``resolve``; its PEP 751 twin, ``pylock``); the
wheelhouse filled and verified from it; and what follows from the inputs alone: the SBOM and
the server flags a target's settings spell. Imports nothing of the later steps, nor the engine.
"""
