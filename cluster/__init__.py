"""mlsysops: cluster layer."""
