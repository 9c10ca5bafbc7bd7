"""Package layout (everything else is in pyproject.toml).

The repository keeps its rooms as top-level folders (`agents/`, `cluster/`, ...) but installs them under the
single import name `mlsysops` (`mlsysops.agents`, `mlsysops.cluster`, ...), so installing the project claims
no generic top-level names in site-packages. pyproject.toml cannot express "map every subfolder of a folder
under another name", hence these few lines.
"""

import sys
from pathlib import Path

from setuptools import find_namespace_packages, setup

sys.path.insert(0, str(Path(__file__).resolve().parent))  # PEP 517 backends do not put the project on the path
from setup_layout import COMPAT_TOP_LEVEL, ROOMS  # noqa: E402

EXCLUDE = ["*__pycache__*"]

package_dir = {"mlsysops": "mlsysops"}
# mlsysops/<room> are symbolic links to the rooms (for a checkout): the rooms are mapped below instead
OWN = find_namespace_packages("mlsysops", exclude=[*EXCLUDE, *ROOMS, *(f"{room}.*" for room in ROOMS)])
packages = ["mlsysops"] + [f"mlsysops.{p}" for p in OWN]
for room in ROOMS:
    package_dir[f"mlsysops.{room}"] = room
    packages += [f"mlsysops.{p}" for p in find_namespace_packages(include=[room, f"{room}.*"], exclude=EXCLUDE)]

# stand-ins for the original framework's top-level import names (setup_layout.COMPAT_TOP_LEVEL)
for name in COMPAT_TOP_LEVEL:
    package_dir[name] = name
    packages += find_namespace_packages(include=[name, f"{name}.*"], exclude=EXCLUDE)

setup(packages=packages, package_dir=package_dir)
