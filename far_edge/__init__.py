"""mlsysops: far_edge layer - the lightweight agent for boards (slixmpp and the standard library only).

`python -m mlsysops.far_edge --help` or `mlsysops agent far-edge --help`. The import closure of this
package is checked (tests/test_far_edge_imports.py): no SPADE, pydantic, numpy, kubernetes, OpenTelemetry
or psutil, so `pip install mlsysops[far-edge]` (slixmpp only) is enough to run it.
"""
