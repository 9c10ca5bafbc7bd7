"""The fast XML escape gives exactly slixmpp's output, and slixmpp's serialiser uses it."""

from __future__ import annotations

import importlib
import json
import random

import mlsysops.agents.agent_base  # noqa: F401 - installs the escape
from mlsysops.agents import xmpp_escape

tostring = importlib.import_module("slixmpp.xmlstream.tostring")


def test_same_output_as_slixmpp_for_any_text():
    original = xmpp_escape._ORIGINAL
    rng = random.Random(7)
    alphabet = "&<>'\"]]>;amp abc\u00e9\u4e2d\n\t{}:,"
    samples = ["", "&amp;", "]]>", "a&b<c>d'e\"f", json.dumps({"reason": "x < y & 'z'", "n": [1, "\"q\""]})]
    samples += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 200))) for _ in range(500)]
    for text in samples:
        assert xmpp_escape.escape(text) == original(text), text
        assert xmpp_escape.escape(text, use_cdata=True) == original(text, use_cdata=True), text


def test_installed_in_slixmpp_serialiser():
    assert tostring.escape is xmpp_escape.escape
    assert xmpp_escape.install() is xmpp_escape._ORIGINAL and tostring.escape is xmpp_escape.escape
