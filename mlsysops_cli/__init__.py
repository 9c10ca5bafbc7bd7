"""mlsysops: mlsysops_cli layer."""
