"""Bearer tokens of the northbound API: where they come from and what each may do.

Two roles: ``read`` (GET only) and ``admin`` (everything). Tokens come from

* a token file (slice config ``api.token_file``): one token per line, ``TOKEN ROLE``; blank lines and
  lines starting with ``#`` are ignored. Example::

      # who            role
      3f9c...e1        admin
      77ab...02        read

* the environment: ``MLSYSOPS_API_TOKENS="TOKEN:ROLE,TOKEN:ROLE"``.

Both sources add up. When neither is configured, :func:`dev_token` generates an admin token and stores it
in ``STATE_DIR/token`` (mode 600), so a local slice is never served without authentication.
"""

from __future__ import annotations

import hmac
import os
import secrets
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

TOKENS_ENV = "MLSYSOPS_API_TOKENS"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


_BEARER = HTTPBearer(auto_error=False, description="`Authorization: Bearer TOKEN`; read tokens may only GET, "
                                                   "admin tokens may do everything.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]


class Role(StrEnum):
    read = "read"
    admin = "admin"


class TokenError(ValueError):
    """A token file or the environment variable is malformed (the message says where)."""


def parse_tokens(text: str, source: str, *, separator: str | None = None) -> dict[str, Role]:
    """``TOKEN ROLE`` entries (one per line, or ``separator``-joined ``TOKEN:ROLE`` pairs)."""
    entries = text.split(",") if separator == ":" else text.splitlines()
    out: dict[str, Role] = {}
    for n, raw in enumerate(entries, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(":", 1) if separator == ":" else line.split()
        if len(parts) != 2 or not parts[0]:
            raise TokenError(f"{source}: entry {n}: expected 'TOKEN{separator or ' '}ROLE'")
        try:
            out[parts[0]] = Role(parts[1].strip())
        except ValueError:
            raise TokenError(f"{source}: entry {n}: role must be one of "
                             f"{[r.value for r in Role]}, got {parts[1]!r}") from None
    return out


def configured_tokens(token_file: Path | None, env: dict[str, str] | None = None) -> dict[str, Role]:
    """Tokens from the token file and ``MLSYSOPS_API_TOKENS`` (empty when neither is set)."""
    env = dict(os.environ) if env is None else env
    tokens: dict[str, Role] = {}
    if token_file is not None:
        try:
            tokens.update(parse_tokens(Path(token_file).read_text(), str(token_file)))
        except OSError as exc:
            raise TokenError(f"cannot read the API token file {token_file}: {exc.strerror}") from None
    if env.get(TOKENS_ENV):
        tokens.update(parse_tokens(env[TOKENS_ENV], TOKENS_ENV, separator=":"))
    return tokens


def dev_token(state_dir: Path) -> tuple[str, Path]:
    """The generated admin token of a local slice (reused while the file exists)."""
    path = Path(state_dir) / "token"
    if path.exists():
        token = path.read_text().strip()
        if token:
            path.chmod(0o600)
            return token, path
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    path.chmod(0o600)
    return token, path


def _loopback_peer(request: Request) -> bool:
    import ipaddress

    host = request.client.host if request.client else None
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class TokenAuth:
    """The FastAPI dependency: 401 without a known token, 403 for a read token on a write."""

    def __init__(self, tokens: dict[str, Role]) -> None:
        self.tokens = dict(tokens)

    def role_of(self, token: str) -> Role | None:
        for known, role in self.tokens.items():   # constant-time compare against every token
            if hmac.compare_digest(known.encode(), token.encode()):
                return role
        return None

    def dependency(self, *, tokenless_loopback: bool = False):  # noqa: ANN201 - a FastAPI dependency callable
        """`tokenless_loopback`: a request without any token from a loopback peer is admin (the original
        MLSysOps `mls` CLI sends none; `api.original_cli`, allowed only with a loopback listener)."""
        async def authorize(request: Request, creds: Credentials) -> Role:
            role = self.role_of(creds.credentials) if creds is not None else None
            if role is None and creds is None and tokenless_loopback and _loopback_peer(request):
                return Role.admin
            if role is None:
                raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or unknown bearer token",
                                    headers={"WWW-Authenticate": "Bearer"})
            if role is not Role.admin and request.method not in READ_METHODS:
                raise HTTPException(status.HTTP_403_FORBIDDEN, f"a {role.value} token may not {request.method}")
            return role

        return authorize
