"""The rooms of the repository that install under the `mlsysops` import name (used by setup.py and by
scripts/lint_imports.py, so the two cannot disagree)."""

ROOMS = ["agents", "continuum", "cluster", "node", "far_edge", "policies", "mechanisms", "sim", "substrates"]
