"""The in-cluster XMPP server (ejabberd) and the agents' credentials.

Registration is closed (no mod_register): every agent has its own account with a random password,
created by `ejabberdctl register` in a postStart hook from the mounted credential Secrets. The agents
connect to their JID's domain as host name, so the XMPP domain *is* the Service name (resolvable from
every pod of the namespace). slixmpp refuses SASL without TLS, so a self-signed certificate is generated
at render time (agents do not verify it; the channel is namespace-internal).
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any

import yaml

from mlsysops.cli.deploy.naming import content_hash, dns_label, meta

XMPP_PORT = 5222
EJABBERD_UID = 9000          # the ejabberd container images run as this user
ACCOUNTS_DIR = "/etc/mlsysops/xmpp-accounts"
TLS_DIR = "/etc/mlsysops/xmpp-tls"


@dataclass(frozen=True, slots=True)
class Account:
    """One agent's XMPP account; `secret` is the Secret holding its password (key `password`)."""

    localpart: str
    role: str               # continuum-agent | cluster-agent | node-agent
    password: str
    secret: str


def new_password() -> str:
    return secrets.token_urlsafe(24)


def self_signed_pem(domain: str) -> str:
    """Private key + self-signed certificate for `domain`, concatenated (the form ejabberd reads)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    return (key_pem + cert.public_bytes(serialization.Encoding.PEM)).decode()


def ejabberd_config(domain: str) -> str:
    cfg = {
        "hosts": [domain],
        "loglevel": "warning",
        "certfiles": [f"{TLS_DIR}/xmpp.pem"],
        "listen": [{
            "port": XMPP_PORT, "ip": "0.0.0.0", "module": "ejabberd_c2s",
            "max_stanza_size": 262144, "shaper": "none", "access": "c2s", "starttls_required": True,
        }],
        "auth_method": "internal",
        # SCRAM-*-PLUS channel binding fails between ejabberd 23.x and slixmpp over TLS 1.3 ("Invalid
        # channel binding", measured); plain SCRAM over the STARTTLS channel remains.
        "disable_sasl_mechanisms": ["SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-512-PLUS"],
        "default_db": "mnesia",
        "acl": {"local": {"user_regexp": ""}},
        "access_rules": {"local": {"allow": "local"}, "c2s": {"allow": "all"}, "register": {"deny": "all"}},
        "shaper_rules": {"max_user_sessions": 10, "max_user_offline_messages": 100},
        # No mod_register: in-band registration is closed; accounts come from the postStart hook.
        "modules": {"mod_disco": {}, "mod_ping": {}, "mod_roster": {}, "mod_stream_mgmt": {}},
    }
    return yaml.safe_dump(cfg, sort_keys=False)


def _register_script(domain: str) -> str:
    # Runs beside the server: wait until it is up, then (re)create every account from the mounted files.
    # The database survives a container restart (emptyDir): an existing account is re-created, so a
    # rotated password takes effect. (`change_password` needs mod_admin_extra; unregister is core.)
    return (f'ejabberdctl started || exit 1; for f in {ACCOUNTS_DIR}/*; do u="$(basename "$f")"; '
            f'p="$(cat "$f")"; ejabberdctl register "$u" {domain} "$p" >/dev/null 2>&1 || '
            f'{{ ejabberdctl unregister "$u" {domain} && ejabberdctl register "$u" {domain} "$p"; }} '
            f'|| exit 1; done')


def credential_secrets(slice_name: str, namespace: str, accounts: list[Account]) -> list[dict[str, Any]]:
    """One Secret per agent Deployment; the node agents share one (a DaemonSet pod picks its key)."""
    by_secret: dict[str, list[Account]] = {}
    for acc in accounts:
        by_secret.setdefault(acc.secret, []).append(acc)
    out = []
    for name, accs in sorted(by_secret.items()):
        data = ({a.localpart: a.password for a in accs} if accs[0].role == "node-agent"
                else {"password": accs[0].password, "jid-localpart": accs[0].localpart})
        out.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                    "metadata": meta(name, namespace, slice_name, accs[0].role), "stringData": data})
    return out


def account_projection(accounts: list[Account]) -> list[dict[str, Any]]:
    """Projected-volume sources that put every account's password at ACCOUNTS_DIR/<localpart>."""
    by_secret: dict[str, list[dict[str, str]]] = {}
    for acc in sorted(accounts, key=lambda a: (a.secret, a.localpart)):
        key = acc.localpart if acc.role == "node-agent" else "password"
        by_secret.setdefault(acc.secret, []).append({"key": key, "path": acc.localpart})
    return [{"secret": {"name": s, "items": items}} for s, items in sorted(by_secret.items())]


def ejabberd_objects(slice_name: str, namespace: str, domain: str, image: str, accounts: list[Account],
                     tls_pem: str) -> list[dict[str, Any]]:
    comp = "xmpp"
    name = dns_label(domain)
    sel = {"app.kubernetes.io/instance": dns_label(slice_name), "app.kubernetes.io/component": comp}
    config = ejabberd_config(domain)
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(f"{name}-config", namespace, slice_name, comp),
          "data": {"ejabberd.yml": config}}
    tls = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
           "metadata": meta(f"{name}-tls", namespace, slice_name, comp), "stringData": {"xmpp.pem": tls_pem}}
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": meta(name, namespace, slice_name, comp),
           "spec": {"selector": sel, "ports": [{"name": "xmpp-c2s", "port": XMPP_PORT,
                                                 "targetPort": "xmpp-c2s", "protocol": "TCP"}]}}
    pod = {
        "serviceAccountName": "default",
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": EJABBERD_UID, "runAsGroup": EJABBERD_UID,
                            "fsGroup": EJABBERD_UID, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "ejabberd",
            "image": image,
            "ports": [{"name": "xmpp-c2s", "containerPort": XMPP_PORT, "protocol": "TCP"}],
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", _register_script(domain)]}}},
            "readinessProbe": {"tcpSocket": {"port": "xmpp-c2s"}, "periodSeconds": 5},
            "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
            "volumeMounts": [
                {"name": "config", "mountPath": "/opt/ejabberd/conf/ejabberd.yml", "subPath": "ejabberd.yml",
                 "readOnly": True},
                {"name": "tls", "mountPath": TLS_DIR, "readOnly": True},
                {"name": "accounts", "mountPath": ACCOUNTS_DIR, "readOnly": True},
                {"name": "database", "mountPath": "/opt/ejabberd/database"},
                {"name": "logs", "mountPath": "/opt/ejabberd/logs"},
            ],
        }],
        "volumes": [
            {"name": "config", "configMap": {"name": f"{name}-config"}},
            {"name": "tls", "secret": {"secretName": f"{name}-tls", "defaultMode": 0o440}},
            {"name": "accounts", "projected": {"defaultMode": 0o440, "sources": account_projection(accounts)}},
            # Accounts are re-created at every start, so the database need not outlive the pod.
            {"name": "database", "emptyDir": {}},
            {"name": "logs", "emptyDir": {}},
        ],
    }
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(name, namespace, slice_name, comp),
           "spec": {"replicas": 1, "strategy": {"type": "Recreate"}, "selector": {"matchLabels": sel},
                    "template": {"metadata": {"labels": meta(name, None, slice_name, comp)["labels"],
                                              "annotations": {"mlsysops.eu/config-hash": content_hash(config)}},
                                 "spec": pod}}}
    return [cm, tls, svc, dep]
