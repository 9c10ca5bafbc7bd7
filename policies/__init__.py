"""mlsysops: policies layer."""
