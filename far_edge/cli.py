"""`python -m mlsysops.far_edge` and `mlsysops agent far-edge`: run one far-edge agent.

Configuration is a JSON file (the standard library reads it; a board needs no YAML parser) and/or flags,
flags winning::

    {"jid": "node-far-edge-1@slice.example", "parent": "cluster-edge-1@slice.example",
     "node": "far-edge-1", "server": "10.0.0.2", "port": 5222, "password_file": "/etc/mlsysops/pw",
     "permitted_actions": ["cpu_frequency"], "report_interval": 5, "telemetry_buffer": 120,
     "components": [{"name": "sensor", "app": "farm", "command": ["/usr/bin/sensor-loop"],
                     "restart": "on-failure"}]}

The password comes from `password_file`, else `$MLSYSOPS_XMPP_PASSWORD`; there is no default.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from mlsysops.far_edge.components import Component, ComponentError

PASSWORD_ENV = "MLSYSOPS_XMPP_PASSWORD"
FIELDS = {"jid", "parent", "node", "server", "port", "password_file", "permitted_actions", "report_interval",
          "monitor_interval", "telemetry_buffer", "event_buffer", "components", "description", "cpufreq_root",
          "backoff_max", "verify_tls"}


class ConfigError(ValueError):
    pass


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlsysops agent far-edge", description="Run a far-edge agent (slixmpp only).")
    p.add_argument("--config", type=Path, help="JSON configuration file")
    p.add_argument("--jid", help="this agent's JID")
    p.add_argument("--parent", help="the cluster agent's JID")
    p.add_argument("--node", help="node name (default: the JID's local part)")
    p.add_argument("--server", help="XMPP server host (default: the JID's domain)")
    p.add_argument("--port", type=int, help="XMPP client port (default 5222)")
    p.add_argument("--password-file", type=Path, help=f"file with the XMPP password (else ${PASSWORD_ENV})")
    p.add_argument("--permit", action="append", dest="permitted_actions", help="a permitted action (repeatable)")
    p.add_argument("--report-interval", type=float, help="seconds between full reports and digests")
    p.add_argument("--monitor-interval", type=float, help="seconds between host samples")
    p.add_argument("--telemetry-buffer", type=int, help="digests kept while disconnected")
    p.add_argument("--cpufreq-root", help="cpufreq sysfs root (default /sys/devices/system/cpu)")
    p.add_argument("--insecure-tls", action="store_true", default=None,
                   help="accept the server's certificate unverified (a slice's self-signed server)")
    p.add_argument("--log-level", default="INFO")
    return p


def load(args: argparse.Namespace) -> dict[str, Any]:
    cfg: dict[str, Any] = {}
    if args.config is not None:
        try:
            cfg = json.loads(args.config.read_text())
        except OSError as exc:
            raise ConfigError(f"{args.config}: {exc.strerror}") from None
        except ValueError as exc:
            raise ConfigError(f"{args.config}: invalid JSON: {exc}") from None
        if not isinstance(cfg, dict):
            raise ConfigError(f"{args.config}: expected a JSON object")
        unknown = set(cfg) - FIELDS
        if unknown:
            raise ConfigError(f"{args.config}: unknown field(s) {sorted(unknown)} (known: {sorted(FIELDS)})")
    for key in ("jid", "parent", "node", "server", "port", "password_file", "permitted_actions",
                "report_interval", "monitor_interval", "telemetry_buffer", "cpufreq_root"):
        value = getattr(args, key)
        if value is not None:
            cfg[key] = str(value) if isinstance(value, Path) else value
    if args.insecure_tls:
        cfg["verify_tls"] = False
    for key in ("jid", "parent"):
        if not cfg.get(key):
            raise ConfigError(f"{key}: required (--{key} or \"{key}\" in the config file)")
    return cfg


def password(cfg: dict[str, Any]) -> str:
    if cfg.get("password_file"):
        try:
            value = Path(cfg["password_file"]).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"password_file {cfg['password_file']}: {exc.strerror}") from None
    else:
        value = os.environ.get(PASSWORD_ENV, "")
    if not value:
        raise ConfigError(f"no XMPP password: set password_file (--password-file) or ${PASSWORD_ENV}")
    return value


def build(cfg: dict[str, Any]) -> Any:
    from mlsysops.agents.slixmpp_lite import JID
    from mlsysops.far_edge.agent import FarEdgeAgent

    node = cfg.get("node") or JID(cfg["jid"]).user
    raw = cfg.get("components") or []
    if not isinstance(raw, list):
        raise ConfigError("components: expected a list")
    try:
        comps = [Component.parse(c, node, f"components[{i}]") for i, c in enumerate(raw)]
    except ComponentError as exc:
        raise ConfigError(str(exc)) from None
    names = [c.name for c in comps]
    if len(set(names)) != len(names):
        raise ConfigError(f"components: names must be unique, got {names}")
    kw = {k: cfg[k] for k in ("server", "port", "permitted_actions", "report_interval", "monitor_interval",
                              "telemetry_buffer", "event_buffer", "description", "cpufreq_root", "backoff_max",
                              "verify_tls")
          if cfg.get(k) is not None}
    return FarEdgeAgent(cfg["jid"], password(cfg), parent=cfg["parent"], node=node, components=comps, **kw)


async def run(cfg: dict[str, Any]) -> None:
    agent = build(cfg)   # inside the loop: slixmpp binds the loop that exists when the client is made
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await agent.start()
    print(f"far-edge agent {agent.node} started (parent {agent.parent})", flush=True)
    await stop.wait()
    await agent.stop()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("slixmpp").setLevel(logging.WARNING)
    try:
        cfg = load(args)
        password(cfg)
    except ConfigError as exc:
        print(f"far-edge agent: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(run(cfg))
    except ConfigError as exc:
        print(f"far-edge agent: {exc}", file=sys.stderr)
        return 2
    return 0
