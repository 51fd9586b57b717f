"""Steps 7 and 8, and after: trusting and shipping an image.

The gate (smoke tests and verify before any human tag moves), the tags, ``push`` and
``promote`` by digest, and ``serve``. Imports every step before it.
"""
