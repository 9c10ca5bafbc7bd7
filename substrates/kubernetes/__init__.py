"""Kubernetes and Karmada: the client with retries (`client`), resumable watches (`watch`), the objects we
create (`manifests`, `karmada`, `crds`) and a coalescing sync loop (`sync_loop`)."""
