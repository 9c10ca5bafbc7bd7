"""mlsysops: sim layer."""
