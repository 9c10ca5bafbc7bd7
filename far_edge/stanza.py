"""The mlsysops frame on an XMPP message without SPADE: the metadata travels in the same XEP-0004 form
SPADE writes (title ``spade:x:metadata``, one text-single field per key), the JSON text in the body."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from mlsysops.agents.wire import SPADE_X_METADATA, XDATA_NS

_X = f"{{{XDATA_NS}}}x"
_TITLE = f"{{{XDATA_NS}}}title"
_FIELD = f"{{{XDATA_NS}}}field"
_VALUE = f"{{{XDATA_NS}}}value"


def metadata_form(meta: dict[str, str]) -> ET.Element:
    form = ET.Element(_X, {"type": "form"})
    ET.SubElement(form, _TITLE).text = SPADE_X_METADATA
    for key, value in meta.items():
        fld = ET.SubElement(form, _FIELD, {"var": key, "type": "text-single"})
        ET.SubElement(fld, _VALUE).text = value
    return form


def read_metadata(xml: Any) -> dict[str, str]:
    """The metadata of a received message's XML (empty when it carries no SPADE metadata form)."""
    out: dict[str, str] = {}
    for form in xml.findall(_X):
        title = form.find(_TITLE)
        if title is None or title.text != SPADE_X_METADATA:
            continue
        for fld in form.findall(_FIELD):
            value = fld.find(_VALUE)
            var = fld.attrib.get("var")
            if var and var != "_thread_node" and value is not None and value.text is not None:
                out[var] = value.text
    return out
