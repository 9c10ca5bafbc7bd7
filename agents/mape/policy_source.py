"""Static checks of an uploaded policy's source: run in the agent WITHOUT executing any of it.

`check_policy_source(name, source)` parses the text with `ast` (never `exec`/`import`) and verifies what
can be known without running it: size, UTF-8, syntax (with line and column), and module-level `def`s of
`initialize()` (no required parameters) and `analyze`/`plan` taking the six arguments of the contract
(context, application_description, system_description, mechanisms, telemetry, ml_connector) or `*args`.
Everything else (what initialize() returns, import errors) is learnt by loading the file in a sandboxed
worker (`plugins.build_sandboxed_policy`). `policy_name()` accepts our file names (`NAME.py`) and the
original framework's (`policy-NAME.py`).
"""

from __future__ import annotations

import ast
import re

MAX_SOURCE_BYTES = 512 * 1024
CALL_ARGS = ("context", "application_description", "system_description", "mechanisms", "telemetry",
             "ml_connector")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


class PolicySourceError(ValueError):
    """The upload is refused; the message names the file, the line when there is one, and what was expected."""


def policy_name(raw: str) -> str:
    """`relocate`, `relocate.py`, `policy-relocate.py` -> `relocate`; PolicySourceError when not a name."""
    name = raw[:-3] if raw.endswith(".py") else raw
    if name.startswith("policy-"):
        name = name[len("policy-"):]
    if not _NAME.fullmatch(name):
        raise PolicySourceError(f"name: {raw!r} is not a valid policy name (expected letters, digits and _, "
                                "starting with a letter, at most 64; or the original form policy-NAME.py)")
    return name


def _required_positionals(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = fn.args
    positional = len(a.posonlyargs) + len(a.args)
    return positional - len(a.defaults)


def _accepts(fn: ast.FunctionDef | ast.AsyncFunctionDef, n: int) -> bool:
    a = fn.args
    positional = len(a.posonlyargs) + len(a.args)
    required_kwonly = sum(1 for d in a.kw_defaults if d is None)
    return _required_positionals(fn) <= n and (positional >= n or a.vararg is not None) and not required_kwonly


def check_policy_source(name: str, source: str | bytes) -> str:
    """The source as text when it passes the static checks; PolicySourceError naming what is wrong."""
    where = f"{name}.py"
    if isinstance(source, bytes):
        if len(source) > MAX_SOURCE_BYTES:
            raise PolicySourceError(f"{where}: {len(source)} bytes; at most {MAX_SOURCE_BYTES} are accepted")
        try:
            source = source.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PolicySourceError(f"{where}: not UTF-8 text (byte {exc.start})") from None
    if len(source.encode()) > MAX_SOURCE_BYTES:
        raise PolicySourceError(f"{where}: {len(source.encode())} bytes; at most {MAX_SOURCE_BYTES} are accepted")
    try:
        tree = ast.parse(source, filename=where)
    except SyntaxError as exc:
        at = f" line {exc.lineno}, column {exc.offset}" if exc.lineno else ""
        raise PolicySourceError(f"{where}{at}: SyntaxError: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError) as exc:   # null bytes, absurd nesting
        raise PolicySourceError(f"{where}: cannot be parsed: {type(exc).__name__}: {exc}") from None
    defs = {node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    problems = []
    init = defs.get("initialize")
    if init is None:
        problems.append("no module-level def initialize() (it returns the policy's context)")
    elif _required_positionals(init) or any(d is None for d in init.args.kw_defaults):
        problems.append(f"line {init.lineno}: initialize() must take no required arguments")
    for fn in ("analyze", "plan"):
        node = defs.get(fn)
        if node is None:
            problems.append(f"no module-level def {fn}({', '.join(CALL_ARGS)})")
        elif not _accepts(node, len(CALL_ARGS)):
            problems.append(f"line {node.lineno}: {fn}() must accept the 6 arguments ({', '.join(CALL_ARGS)})")
    if problems:
        raise PolicySourceError(f"{where}: " + "; ".join(problems))
    return source
