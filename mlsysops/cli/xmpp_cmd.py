"""`mlsysops xmpp accounts` and `mlsysops xmpp config`: run the slice on your own XMPP server.

The embedded server of `mlsysops up` creates the slice's accounts itself. With one agent per process the
agents talk to a server the operator runs (prosody or ejabberd); these commands give every agent its own
account with a generated password (one file per agent, named by the JID's local part, 0600, read by the
agents through `xmpp.password_dir`) and print a server configuration with in-band registration closed and
TLS required, so nothing but the slice's agents can log in.
"""

from __future__ import annotations

import secrets
import shlex
import subprocess
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

xmpp_app = typer.Typer(help="Accounts and server configuration for running the agents on prosody or ejabberd.",
                       no_args_is_help=True)


class Server(StrEnum):
    prosody = "prosody"
    ejabberd = "ejabberd"


DEFAULT_CTL = {Server.prosody: "prosodyctl", Server.ejabberd: "ejabberdctl"}


def _load(config: Path):   # noqa: ANN202 - SliceSpec, imported lazily (pydantic models)
    from mlsysops.agents.descriptions import DescriptionError
    from mlsysops.agents.slice_config import load_slice

    try:
        return load_slice(config)
    except DescriptionError as exc:
        typer.echo(f"invalid slice {config}:\n{exc}", err=True)
        raise typer.Exit(1) from None


def write_accounts(jids: list[str], directory: Path, *, rotate: bool = False) -> dict[str, str]:
    """One password file per JID in `directory` (kept unless `rotate`); returns localpart -> password."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    out = {}
    for jid in jids:
        local = jid.split("@", 1)[0]
        path = directory / local
        if path.exists() and not rotate and path.read_text(encoding="utf-8").strip():
            out[local] = path.read_text(encoding="utf-8").strip()
            continue
        password = secrets.token_urlsafe(24)
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(password + "\n", encoding="utf-8")
        out[local] = password
    return out


def register_command(server: Server, ctl: str, local: str, domain: str, password: str) -> list[str]:
    return [*shlex.split(ctl), "register", local, domain, password]


@xmpp_app.command("accounts")
def accounts(
    config: Annotated[Path, typer.Option("-c", "--config", help="The slice config file.", exists=True,
                                         dir_okay=False)],
    directory: Annotated[Path | None, typer.Option("--dir", help="Where to write one password file per agent "
                                                          "(default: the slice's xmpp.password_dir).")] = None,
    register: Annotated[Server | None, typer.Option(help="Also create the accounts on this server with its "
                                                         "admin tool (run on the server's host).")] = None,
    ctl: Annotated[str | None, typer.Option(help="The admin command with its options, e.g. "
                                                 "'prosodyctl --config /etc/prosody/prosody.cfg.lua' "
                                                 "(default: prosodyctl / ejabberdctl).")] = None,
    rotate: Annotated[bool, typer.Option(help="Generate new passwords even for agents that have one.")] = False,
) -> None:
    """Generate one XMPP account per agent of the slice (password files) and optionally register them."""
    spec = _load(config)
    from mlsysops.cli.slice_assembly import SliceAssembly

    target = directory or spec.config.xmpp.password_dir
    if target is None:
        typer.echo("no directory: pass --dir or set xmpp.password_dir in the slice", err=True)
        raise typer.Exit(2)
    assembly = SliceAssembly(spec)
    jids = assembly.all_jids()
    passwords = write_accounts(jids, target, rotate=rotate)
    typer.echo(f"{len(jids)} accounts in {target} (one file per agent, 0600):")
    for jid in jids:
        typer.echo(f"  {jid}")
    if register is None:
        tool = ctl or DEFAULT_CTL[Server.prosody]
        typer.echo("create them on the server, e.g.:")
        for jid in jids[:3]:
            local = jid.split("@", 1)[0]
            typer.echo(f"  {tool} register {local} {assembly.domain} \"$(cat {target / local})\"")
        if len(jids) > 3:
            typer.echo(f"  ... ({len(jids) - 3} more), or run again with --register prosody|ejabberd")
    else:
        tool = ctl or DEFAULT_CTL[register]
        for jid in jids:
            local = jid.split("@", 1)[0]
            cmd = register_command(register, tool, local, assembly.domain, passwords[local])
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            except OSError as exc:
                typer.echo(f"cannot run {shlex.split(tool)[0]}: {exc.strerror}", err=True)
                raise typer.Exit(1) from None
            text = (proc.stdout + proc.stderr).strip()
            if proc.returncode != 0 and register is Server.ejabberd and "already registered" in text:
                # ejabberdctl cannot change a password without mod_admin_extra: re-create the account
                subprocess.run([*shlex.split(tool), "unregister", local, assembly.domain], capture_output=True,
                               timeout=60)
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
                text = (proc.stdout + proc.stderr).strip()
            if proc.returncode != 0:
                typer.echo(f"{register.value}: registering {jid} failed: {text}", err=True)
                raise typer.Exit(1)
        typer.echo(f"registered {len(jids)} accounts on {register.value}")
    if spec.config.xmpp.password_dir is None:
        typer.echo(f"agents read them with `xmpp: {{password_dir: {target}}}` in the slice")


PROSODY = """\
-- prosody configuration for the MLSysOps slice {slice!r} (written by `mlsysops xmpp config`).
-- Registration closed, TLS required; create the agents' accounts with `mlsysops xmpp accounts --register prosody`.
c2s_ports = {{ {port} }}
s2s_ports = {{ }}
modules_enabled = {{ "roster"; "saslauth"; "tls"; "disco"; "ping"; "posix"; "presence"; }}
modules_disabled = {{ "s2s"; "offline"; }}
authentication = "internal_hashed"
allow_registration = false
c2s_require_encryption = true
allow_unencrypted_plain_auth = false
-- agents exchange small messages at a steady rate; Nagle's algorithm only delays them
network_settings = {{ nagle = false; }}
limits = {{ c2s = {{ rate = "10mb/s"; }}; }}
VirtualHost "{domain}"
  ssl = {{ certificate = "{cert}"; key = "{key}"; }}
"""


@xmpp_app.command("config")
def server_config(
    config: Annotated[Path, typer.Option("-c", "--config", help="The slice config file.", exists=True,
                                         dir_okay=False)],
    server: Annotated[Server, typer.Option(help="Which server the configuration is for.")] = Server.prosody,
    cert: Annotated[Path, typer.Option(help="The server's certificate (must name the XMPP domain).")] =
        Path("/etc/mlsysops/xmpp.crt"),
    key: Annotated[Path, typer.Option(help="Its private key (prosody) - ejabberd reads key+cert from --cert.")] =
        Path("/etc/mlsysops/xmpp.key"),
) -> None:
    """Print a server configuration for the slice: its domain, registration closed, TLS required."""
    spec = _load(config)
    xc = spec.config.xmpp
    port = xc.port or 5222
    if server is Server.prosody:
        typer.echo(PROSODY.format(slice=spec.name, port=port, domain=xc.domain, cert=cert, key=key), nl=False)
        return
    import yaml

    from mlsysops.cli.deploy.xmpp import ejabberd_config

    typer.echo(f"# ejabberd configuration for the MLSysOps slice {spec.name!r} (written by `mlsysops xmpp "
               f"config`).\n# Registration closed, TLS required; create the agents' accounts with "
               f"`mlsysops xmpp accounts --register ejabberd`.")
    cfg = yaml.safe_load(ejabberd_config(xc.domain or "localhost"))
    cfg["certfiles"] = [str(cert)]
    cfg["listen"][0]["port"] = port
    typer.echo(yaml.safe_dump(cfg, sort_keys=False), nl=False)


def register(app: typer.Typer) -> None:
    app.add_typer(xmpp_app, name="xmpp")
