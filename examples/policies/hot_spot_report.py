"""Example cluster policy to upload (`mlsysops policy upload edge-1 examples/policies/hot_spot_report.py`).

It never acts: it reports, per application, the components running on a node whose CPU utilisation stays
above `hot` (0.9 by default). A report is a `held` decision record (`mlsysops events APP` shows it
without --all), written when the set of hot spots changes or once a minute while it lasts.
"""

HOT = 0.9


def initialize():
    return {
        "scope": "application",                      # one loop per app the cluster runs
        "configuration": {"analyze_interval": "5s"},
        "telemetry": {"metrics": ["system.cpu.utilization"]},
        "mechanisms": [],                            # nothing to act on: analysis only
        "hot": HOT,
    }


async def analyze(context, application_description, system_description, mechanisms, telemetry, ml_connector):
    app = application_description["name"]
    hot = {name for name, info in system_description["nodes"].items()
           if info.get("alive") and (info.get("cpu_utilization") or 0.0) > context["hot"]}
    spots = sorted(f"{i['component']} on {i['node']}" for i in system_description["instances"]
                   if i["app"] == app and i["node"] in hot and i["status"] == "running")
    context["explanation"] = {
        "hot_nodes": sorted(hot),
        "held": [f"{app}: {s} (cpu > {context['hot']:.0%})" for s in spots],
    }
    return False, context


async def plan(context, application_description, system_description, mechanisms, telemetry, ml_connector):
    return {}, context
