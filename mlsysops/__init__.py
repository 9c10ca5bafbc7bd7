"""mlsysops: autonomic, explainable management of the cloud / edge / far-edge continuum.

Everything installs under this one import name (`mlsysops.agents`, `mlsysops.cluster`, `mlsysops.cli`, ...),
so the package claims no generic top-level names (`agents`, `node`, `sim`) in a user's site-packages. In the
repository the rooms stay top-level folders: the wheel maps them under `mlsysops/` (setup.py), and in a
checkout `mlsysops/<room>` is a symbolic link to `../<room>`, so the package is the same tree whether it is
installed or not (and tools that walk a package's folder, such as import-linter, see all of it). The plugin
contracts are in `mlsysops.plugins`.
"""

from __future__ import annotations

__version__ = "0.1.0"
