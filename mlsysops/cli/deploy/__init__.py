"""Kubernetes manifests to run a whole slice in a cluster (`mlsysops deploy render|apply`)."""

from mlsysops.cli.deploy.render import DEFAULT_IMAGE, DEFAULT_XMPP_IMAGE, render

__all__ = ["DEFAULT_IMAGE", "DEFAULT_XMPP_IMAGE", "render"]
