"""Reading images and this machine: what an image carries and can run, whoever built it.

``verify`` (its checks, the GPU-code reading they share with ``doctor``, the feature table,
the server command, the GPU checks and the server container they start), ``doctor``,
``archs``, ``diff`` and ``inspect``. One report model (:mod:`.report`) for every answer.
Imports the inputs and the engine, never the build or shipping steps.
"""
