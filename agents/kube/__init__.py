"""Kubernetes substrate: client with bounded retries, manifest builders, watches, our CRDs."""
