"""mlsysops: mechanisms layer."""
