"""mlsysops: autonomic, explainable management of the cloud / edge / far-edge continuum.

Everything installs under this one import name (`mlsysops.agents`, `mlsysops.cluster`, `mlsysops.cli`, ...),
so the package claims no generic top-level names (`agents`, `node`, `sim`) in a user's site-packages. In the
repository the rooms stay top-level folders: the wheel maps them under `mlsysops/` (setup.py), and in a
source checkout this package's search path is extended to the checkout's root so `mlsysops.agents` is the
`agents/` folder beside this one. The plugin contracts are in `mlsysops.plugins`.
"""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"

_CHECKOUT = Path(__file__).resolve().parent.parent
if (_CHECKOUT / "agents" / "__init__.py").is_file() and (_CHECKOUT / "pyproject.toml").is_file():
    __path__.append(str(_CHECKOUT))  # noqa: F821 - a package's __path__ is defined at import time
