"""Traffic across clusters on the simulated continuum (the cluster agent's `traffic_routes` mechanism).

Same command as `kube_traffic` (the continuum's full set for one app on this cluster). The simulator has
no Services, so:

* `expose` answers the nodes of this cluster running the component, as `sim://<node>` addresses at the
  component's first declared port (the port 80 stand-in when it declares none: in the simulator every
  component can be called);
* `routes` become `SimContinuum.set_routes(app, cluster, {component: serving cluster})`: from then on the
  simulator sends this cluster's calls to that component to the serving cluster's instances, and the
  callers' response times show the hop (see `sim/continuum.py`, `_reachable`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlsysops.sim import InstanceState, SimContinuum

STAND_IN_PORT = 80


class SimTrafficMechanism:
    name = "traffic_routes"

    def __init__(self, sim: SimContinuum, cluster_id: str) -> None:
        self.sim = sim
        self.cluster_id = cluster_id
        self.apps: Mapping[str, Any] = {}
        self._written: dict[str, dict[str, dict[str, Any]]] = {}   # app -> component -> route as given

    def initialize(self, *, app_models: Mapping[str, Any]) -> None:
        self.apps = app_models

    async def get_options(self) -> dict[str, Any]:
        return {"actions": ["expose", "route"], "substrate": "sim"}

    async def get_state(self) -> dict[str, Any]:
        routes = {app: {comp: {"cluster": serving, "endpoints": (self._written.get(app, {}).get(comp) or {})
                               .get("endpoints", [])}
                        for comp, serving in (self.sim.routes(app).get(self.cluster_id) or {}).items()}
                  for app in self._written}
        return {"cluster": self.cluster_id, "routes": {a: r for a, r in routes.items() if r}}

    def _port(self, app: str, component: str) -> tuple[int, str | None]:
        model = self.apps.get(app)
        comp = model.component(component) if model is not None else None
        for c in (comp.containers if comp is not None else []):
            for p in c.ports or []:
                if p.container_port is not None:
                    return p.container_port, p.name
        return STAND_IN_PORT, None

    def _exposed(self, app: str, component: str) -> list[dict[str, Any]]:
        nodes = sorted({i.node for i in self.sim.instances(app=app, state=InstanceState.RUNNING)
                        if i.component == component and self.sim.node(i.node).cluster == self.cluster_id})
        port, name = self._port(app, component)
        return [{"address": f"sim://{n}", "port": port, "name": name, "protocol": "TCP"} for n in nodes]

    async def apply(self, command: Any) -> dict[str, Any]:
        if not isinstance(command, dict) or not isinstance(command.get("app"), str):
            return {"ok": False, "detail": "invalid command: expected {app, expose, routes}"}
        app = command["app"]
        exposed, not_exposed = {}, {}
        for comp in command.get("expose") or []:
            eps = self._exposed(app, comp)
            if eps:
                exposed[comp] = eps
            else:
                not_exposed[comp] = f"no running instance of {app}/{comp} in {self.cluster_id}"
        routes = {c: r for c, r in (command.get("routes") or {}).items() if r.get("endpoints")}
        before = set(self._written.get(app, {}))
        self.sim.set_routes(app, self.cluster_id, {c: r["cluster"] for c, r in routes.items()})
        if routes:
            self._written[app] = routes
        else:
            self._written.pop(app, None)
        return {"ok": True, "detail": {"exposed": exposed, "not_exposed": not_exposed,
                                       "routes": {c: {"cluster": r["cluster"], "endpoints": r["endpoints"]}
                                                  for c, r in routes.items()},
                                       "removed": sorted(before - set(routes))}}
