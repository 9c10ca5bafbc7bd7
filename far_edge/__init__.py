"""mlsysops: far_edge layer."""
