"""The in-cluster XMPP server (ejabberd) and the agents' credentials.

Registration is closed (no mod_register): every agent has its own account with a random password,
created by `ejabberdctl register` in a postStart hook from the mounted credential Secrets. The agents
connect to their JID's domain as host name, so the XMPP domain *is* the Service name (resolvable from
every pod of the namespace). TLS is required and verified: at render time a CA signs the server's
certificate for that name; the CA's certificate goes to every agent (`xmpp.ca_file`), its key is thrown
away, so no other certificate can ever chain to it.
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
CA_CONFIG_MAP = "mlsysops-xmpp-ca"
CA_DIR = "/etc/mlsysops-xmpp-ca"


@dataclass(frozen=True, slots=True)
class Account:
    """One agent's XMPP account; `secret` is the Secret holding its password (key `password`)."""

    localpart: str
    role: str               # continuum-agent | cluster-agent | node-agent
    password: str
    secret: str


def new_password() -> str:
    return secrets.token_urlsafe(24)


def _pem(obj: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    if hasattr(obj, "public_bytes"):
        return obj.public_bytes(serialization.Encoding.PEM).decode()
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption()).decode()


def server_tls(domain: str) -> tuple[str, str]:
    """(server key + certificate for `domain` in the form ejabberd reads, the CA certificate that signed it).
    The CA key exists only inside this call."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    valid = (now - dt.timedelta(minutes=5), now + dt.timedelta(days=3650))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"mlsysops slice CA for {domain}")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(valid[0]).not_valid_after(valid[1])
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(valid[0]).not_valid_after(valid[1])
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    return _pem(key) + _pem(cert), _pem(ca)


def certificate_of(pem: str) -> str:
    """The first certificate in a PEM bundle (a self-signed server certificate is its own trust anchor:
    slices rendered before the CA existed keep working when re-applied)."""
    begin = pem.index("-----BEGIN CERTIFICATE-----")
    end = pem.index("-----END CERTIFICATE-----", begin) + len("-----END CERTIFICATE-----")
    return pem[begin:end] + "\n"


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
    """One Secret per agent: a pod mounts its own password and nobody else's."""
    return [{"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
             "metadata": meta(acc.secret, namespace, slice_name, acc.role),
             "stringData": {"password": acc.password, "jid-localpart": acc.localpart}}
            for acc in sorted(accounts, key=lambda a: a.secret)]


def account_projection(accounts: list[Account]) -> list[dict[str, Any]]:
    """Projected-volume sources that put every account's password at ACCOUNTS_DIR/<localpart>."""
    return [{"secret": {"name": acc.secret, "items": [{"key": "password", "path": acc.localpart}]}}
            for acc in sorted(accounts, key=lambda a: a.secret)]


def ca_config_map(slice_name: str, namespace: str, ca_pem: str) -> dict[str, Any]:
    """The CA certificate the agents verify the server against (public: a ConfigMap)."""
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(CA_CONFIG_MAP, namespace, slice_name, "xmpp"),
            "data": {"ca.crt": ca_pem}}


def ejabberd_objects(slice_name: str, namespace: str, domain: str, image: str, accounts: list[Account],
                     tls_pem: str, ca_pem: str) -> list[dict[str, Any]]:
    comp = "xmpp"
    name = dns_label(domain)
    sel = {"app.kubernetes.io/instance": dns_label(slice_name), "app.kubernetes.io/component": comp}
    config = ejabberd_config(domain)
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(f"{name}-config", namespace, slice_name, comp),
          "data": {"ejabberd.yml": config}}
    tls = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
           "metadata": meta(f"{name}-tls", namespace, slice_name, comp),
           "stringData": {"xmpp.pem": tls_pem, "ca.crt": ca_pem}}
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
