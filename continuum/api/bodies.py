"""Request bodies and error answers shared by the routers.

Errors are `{"detail": ...}`; an invalid description answers 422 with the validator's issues (field
`path`, `message`, `expected`, `suggestion`); an unknown id answers 404 and names the known ones.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse

from mlsysops.agents.descriptions import DescriptionError, Document, ValidationIssue, load_obj, load_text
from mlsysops.continuum.store import PersistError

log = logging.getLogger(__name__)
# Declared on the operations that write the desired state.
PERSIST_RESPONSES: dict[int | str, dict[str, Any]] = {
    507: {"description": "the desired state could not be written: the disk is full (nothing was changed)"},
    503: {"description": "the desired state could not be written (read-only or missing state directory; "
                         "nothing was changed)"}}

YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})
# The OpenAPI request body of the description-taking operations (they read the raw body themselves).
DESCRIPTION_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "object", "description": "MLSysOpsApp, wrapped "
                                    "(`{MLSysOpsApp: {...}}`) or Kubernetes form"}},
    "application/yaml": {"schema": {"type": "string"}}}}}


def jsonable(value: Any) -> Any:
    """A JSON-safe copy (decision inputs, sim snapshots and echoed bad values may hold anything, even
    inf/nan, which strict JSON responses reject)."""
    return json.loads(json.dumps(value, default=str), parse_constant=str)


def invalid(exc: DescriptionError) -> HTTPException:
    return HTTPException(422, {"message": str(exc), **jsonable(exc.to_dict())})


def issue(message: str, path: str = "", **kw: Any) -> HTTPException:
    return invalid(DescriptionError([ValidationIssue(message, path=path, file="<request body>", **kw)]))


async def persist_failed(request: Request, exc: Exception) -> JSONResponse:
    """A failed desired-state write answers 507 (disk full) or 503 with its cause; the request changed
    nothing and the agent keeps serving."""
    assert isinstance(exc, PersistError)
    log.error("%s %s: %s", request.method, request.url.path, exc)
    return JSONResponse({"detail": str(exc)}, status_code=507 if exc.storage_full else 503)


def not_found(what: str, name: str, known: Any = None) -> HTTPException:
    detail = f"unknown {what} {name!r}"
    if known is not None:
        detail += f"; known: {sorted(known)}"
    return HTTPException(404, detail)


async def read_one(request: Request, inventory: Any, kind: type) -> Document:
    """One description of `kind` from the body: JSON (either form) or YAML (Content-Type application/yaml)."""
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    try:
        text = (await request.body()).decode()
    except UnicodeDecodeError:
        raise issue("the body is not UTF-8 text") from None
    source = "<request body>"
    try:
        if ctype in YAML_TYPES:
            docs = load_text(text, source=source, inventory=inventory)
        elif ctype == "application/json" or ctype.endswith("+json"):
            try:
                obj = json.loads(text)
            except (ValueError, RecursionError) as exc:
                raise issue(f"invalid JSON: {exc}") from None
            docs = [load_obj(obj, source=source, inventory=inventory)]
        else:
            raise HTTPException(415, f"unsupported Content-Type {ctype!r}: send application/json or "
                                     "application/yaml")
    except DescriptionError as exc:
        raise invalid(exc) from None
    if len(docs) != 1:
        raise issue(f"expected one application per request, got {len(docs)} documents")
    if not isinstance(docs[0].spec, kind):
        raise issue(f"expected an {kind.kind}, got {docs[0].kind}", path="kind", expected=kind.kind)
    return docs[0]
