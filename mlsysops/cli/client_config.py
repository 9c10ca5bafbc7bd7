"""Where the CLI finds the API: flags, then env (MLSYSOPS_API, MLSYSOPS_TOKEN), then the config file.

The config file (`~/.mlsysops/config.yaml`, or `$MLSYSOPS_CONFIG`) holds named contexts like a kubeconfig;
`mlsysops up` writes one for its slice and makes it current, so `mlsysops get apps` works at once::

    current-context: demo
    contexts:
      demo: {api: "http://127.0.0.1:8080", token: "..."}
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml


def config_path() -> Path:
    return Path(os.environ.get("MLSYSOPS_CONFIG") or Path.home() / ".mlsysops" / "config.yaml")


def _read(path: Path) -> dict:
    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    return data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class Target:
    api: str
    token: str | None
    context: str | None


def resolve(api: str | None = None, token: str | None = None, context: str | None = None) -> Target | None:
    data = _read(config_path())
    name = context or data.get("current-context")
    ctx = (data.get("contexts") or {}).get(name, {}) if name else {}
    url = api or os.environ.get("MLSYSOPS_API") or ctx.get("api")
    if not url:
        return None
    return Target(url.rstrip("/"), token or os.environ.get("MLSYSOPS_TOKEN") or ctx.get("token"), name)


def save_context(name: str, api: str, token: str | None, make_current: bool = True) -> Path:
    """Add or replace a context (the file is private: it holds tokens)."""
    path = config_path()
    data = _read(path)
    data.setdefault("contexts", {})[name] = {"api": api, "token": token}
    if make_current:
        data["current-context"] = name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=True))
    path.chmod(0o600)
    return path
