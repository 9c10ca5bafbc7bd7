"""mlsysops: continuum layer."""
