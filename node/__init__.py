"""mlsysops: node layer."""
