"""mlsysops: agents layer."""
