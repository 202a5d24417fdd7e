"""Channel tests that run offline: ``radbridge test`` and the pytest plugin.

A test case names a channel (or a single template), an input (HL7 inline or from a file, or the
attributes of a stored DICOM instance) and what must come out: the ACK code, per-destination
outputs with field assertions, destinations that must stay silent, golden files, worklist items.
Cases live in a config's ``tests:`` block or in sidecar ``*.test.yaml`` files (``cases``); each
runs against the real engine built from the config through the production build path, with the
sources and the destinations that leave the process swapped for the ``memory`` connectors, on a
fresh SQLite store and a fake clock (``harness``); ``expect`` checks the outcome.
"""
