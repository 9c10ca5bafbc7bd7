"""The rooms of the repository that install under the `mlsysops` import name (used by setup.py and by
scripts/lint_imports.py, so the two cannot disagree)."""

ROOMS = ["agents", "continuum", "cluster", "node", "far_edge", "policies", "mechanisms", "sim", "substrates"]

# Top-level packages the wheel ships besides `mlsysops`: stand-ins for import names the original MLSysOps
# framework's plugins use (`from mlstelemetry import MLSTelemetry`), so its policy files run unchanged.
COMPAT_TOP_LEVEL = ["mlstelemetry"]
