"""Substrates: client-side access to what the mechanisms act on (a Kubernetes or Karmada API server).

Beside the mechanisms, not in the core: `mlsysops.agents` knows no substrate. Mechanisms, the layers'
substrate-specific pieces (the continuum's app CR mirror, the cluster's node inventory and status writer),
the simulator's kubelet and the CLI's `deploy` use these.
"""
