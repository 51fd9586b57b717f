"""Steps 4 to 6: making an image from its inputs.

The plan (stages, keys, labels, flags, SBOM, served files, computed once) and its rendered
Dockerfile; the base; the stages, built or reused (``stages``), with the wheel server, the
registry stage cache and a derived target's evidence; the final image normalized;
``--check-reproducible``; and ``gc`` for what an interrupted build left. Imports the inputs,
the engine and the image readers (:mod:`builder.check`), never the shipping steps.
"""
