"""Bounded hypothesis fuzzers: mutated example descriptions only ever raise DescriptionError, and every
protocol message kind's body only ever raises the protocol's own ProtocolError."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mlsysops.agents.tree_reads  # noqa: F401 - registers its message kinds
from mlsysops.agents import protocol
from mlsysops.agents.descriptions import DescriptionError, load_obj, load_text

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = [d for f in ("examples/apps/video-analytics.yaml", "examples/apps/env-monitor.yaml")
            for d in yaml.safe_load_all((ROOT / f).read_text()) if d]
EXAMPLES += [d for f in sorted((ROOT / "examples/slices/demo/nodes").glob("*.yaml"))[:2]
             for d in yaml.safe_load_all(f.read_text()) if d]
FUZZ = settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))

leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=10**300, max_value=10**400),
                 st.floats(), st.text(max_size=10), st.sampled_from(["250m", "1e400", "-1Gi", "", "*"]))
junk = st.recursive(leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                    max_leaves=10)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, child in items:
        out += _paths(child, (*prefix, key))
    return out


def _mutated(doc: Any, path: tuple, value: Any, drop: bool) -> Any:
    doc = copy.deepcopy(doc)
    if not path:
        return value
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if drop:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


@FUZZ
@given(data=st.data())
def test_mutated_examples_only_raise_description_error(data):
    doc = data.draw(st.sampled_from(EXAMPLES))
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(doc)))
        doc = _mutated(doc, path, data.draw(junk), drop=bool(path) and data.draw(st.booleans()))
    for attempt in (lambda: load_obj(doc), lambda: load_text(yaml.safe_dump(doc))):
        try:
            attempt()
        except DescriptionError as exc:
            assert str(exc)
            json.dumps(exc.to_dict(), default=str)


KINDS = sorted({k for k, _ in protocol._REGISTRY} | {k.value for k in protocol.Kind})


@FUZZ
@given(kind=st.sampled_from(KINDS), performative=st.sampled_from(list(protocol.Performative)),
       body=st.dictionaries(st.text(max_size=12), junk, max_size=5))
def test_protocol_bodies_only_raise_protocol_error(kind, performative, body):
    try:
        protocol.validate_body(kind, performative, body)
    except protocol.ProtocolError as exc:
        assert str(exc)
