"""How an agent checks the XMPP server's certificate.

Three modes, chosen by the slice (`xmpp.ca_file`, `xmpp.insecure_skip_tls_verify`) or the launcher:
- `ca_file` set: the chain must lead to a certificate in that PEM bundle and the name must match the
  server's host (the production case: the CA `mlsysops deploy render` generates, or the operator's own);
- `verify=True` without a file: the system trust store, hostname checked (a server with a public cert);
- `verify=False`: nothing checked. Only for loopback servers the slice starts itself (the embedded server's
  certificates come from a CA whose key ships with pyjabber, so checking them would prove nothing) or when
  the operator asks for it explicitly; the channel is still encrypted, STARTTLS stays required.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TlsVerification", "TlsConfigError"]


class TlsConfigError(ValueError):
    """The configured CA bundle cannot be used (missing, unreadable, not PEM)."""


@dataclass(frozen=True, slots=True)
class TlsVerification:
    verify: bool = False
    ca_file: Path | None = None

    @classmethod
    def for_slice(cls, xmpp: object) -> TlsVerification:
        """From a slice's `xmpp` section: external servers are verified unless the operator opts out."""
        ca_file = getattr(xmpp, "ca_file", None)
        if getattr(xmpp, "server", "embedded") == "embedded":
            return cls(verify=ca_file is not None, ca_file=ca_file)
        return cls(verify=not getattr(xmpp, "insecure_skip_tls_verify", False), ca_file=ca_file)

    def check(self) -> None:
        """Fail early, with the file named, instead of at every reconnect attempt."""
        if self.verify and self.ca_file is not None:
            try:
                ssl.create_default_context(cafile=str(self.ca_file))
            except FileNotFoundError:
                raise TlsConfigError(f"xmpp.ca_file {self.ca_file}: no such file") from None
            except (ssl.SSLError, OSError) as exc:
                raise TlsConfigError(f"xmpp.ca_file {self.ca_file}: not a PEM certificate bundle ({exc})") from None

    def context(self, ctx: ssl.SSLContext) -> ssl.SSLContext:
        """The context a connection uses. With `ca_file`: a new one trusting that bundle alone (the client's
        default context already holds the system store, and loading the file into it would trust both);
        otherwise `ctx`, configured."""
        if self.verify and self.ca_file is not None:
            return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file))
        self.configure(ctx)
        return ctx

    def configure(self, ctx: ssl.SSLContext) -> None:
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.check_hostname = True
        if self.ca_file is not None:
            ctx.load_verify_locations(cafile=str(self.ca_file))
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)

    def describe(self) -> str:
        if not self.verify:
            return "server certificate not verified"
        return f"server certificate verified against {self.ca_file}" if self.ca_file else \
            "server certificate verified against the system trust store"
