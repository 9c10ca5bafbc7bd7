"""NetworkPolicies of the agents' namespace: nothing reaches an agent pod but what the slice needs.

- default: no ingress to any pod of the namespace;
- the XMPP server (5222) accepts only the slice's agent pods (a pod elsewhere cannot even try a password);
- the continuum agent's API port is open to any source, because operators and dashboards reach it from
  outside the namespace; every request still needs a token (`kubectl port-forward` bypasses policies).
Egress stays open: agents need the Kubernetes API server and DNS, whose addresses differ per cluster.
Policies only bind where the cluster's network plugin enforces them (Calico, Cilium, ...).
"""

from __future__ import annotations

from typing import Any

from mlsysops.cli.deploy.naming import dns_label, meta, selector
from mlsysops.cli.deploy.xmpp import XMPP_PORT

AGENT_ROLES = ["continuum-agent", "cluster-agent", "node-agent"]


def network_policies(slice_name: str, namespace: str, api_port: int) -> list[dict[str, Any]]:
    def policy(name: str, component: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": meta(name, namespace, slice_name, component), "spec": spec}

    agents = {"podSelector": {"matchLabels": {"app.kubernetes.io/instance": dns_label(slice_name)},
                              "matchExpressions": [{"key": "app.kubernetes.io/component", "operator": "In",
                                                    "values": AGENT_ROLES}]}}
    return [
        policy("mlsysops-default-deny-ingress", "network", {"podSelector": {}, "policyTypes": ["Ingress"]}),
        policy("mlsysops-xmpp-from-agents", "xmpp", {
            "podSelector": {"matchLabels": selector(slice_name, "xmpp")},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [agents], "ports": [{"protocol": "TCP", "port": XMPP_PORT}]}]}),
        policy("mlsysops-api", "continuum-agent", {
            "podSelector": {"matchLabels": selector(slice_name, "continuum-agent")},
            "policyTypes": ["Ingress"],
            "ingress": [{"ports": [{"protocol": "TCP", "port": api_port}]}]}),
    ]
