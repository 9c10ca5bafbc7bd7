"""Static checks of uploaded policy sources (nothing of the source runs) and where uploads are loaded from."""

from __future__ import annotations

import textwrap

import pytest

from mlsysops.agents.mape import PolicyRegistry
from mlsysops.agents.mape.policy_source import (
    MAX_SOURCE_BYTES,
    PolicySourceError,
    check_policy_source,
    policy_name,
)

GOOD = textwrap.dedent("""
    def initialize(settings=None):
        return {"scope": "global"}
    async def analyze(context, application_description, system_description, mechanisms, telemetry, ml_connector):
        return False, context
    def plan(*args):
        return {}, args[0]
""")


def test_names_ours_and_the_original_frameworks() -> None:
    assert policy_name("relocate") == policy_name("relocate.py") == policy_name("policy-relocate.py") == "relocate"
    for bad in ("../x", "policy-", "9lives", "a-b", "x" * 65):
        with pytest.raises(PolicySourceError, match="not a valid policy name"):
            policy_name(bad)


def test_a_good_source_passes_and_bytes_are_decoded() -> None:
    assert check_policy_source("p", GOOD) == GOOD
    assert check_policy_source("p", GOOD.encode()) == GOOD


@pytest.mark.parametrize(("source", "message"), [
    ("def initialize():\n    return {\n", "p.py line 2, column"),
    ("x = 1\n", "no module-level def initialize()"),
    (GOOD.replace("def plan(*args)", "def plan(a, b)"), "plan() must accept the 6 arguments"),
    (GOOD.replace("def initialize(settings=None)", "def initialize(settings)"), "initialize() must take no required"),
    (GOOD.replace("async def analyze", "async def nalyze"), "no module-level def analyze("),
    ("import os\n" + GOOD.replace("def plan", "class plan:\n    pass\ndef _plan"), "no module-level def plan("),
    ("x = 1\0\n", "p.py: SyntaxError: source code string cannot contain null bytes"),
    (b"\xff\xfe" + GOOD.encode(), "not UTF-8 text (byte 0)"),
    ("#" * (MAX_SOURCE_BYTES + 1), f"at most {MAX_SOURCE_BYTES}"),
])
def test_rejections_say_what_and_where(source, message) -> None:
    with pytest.raises(PolicySourceError, match=None) as info:
        check_policy_source("p", source)
    assert message in str(info.value)


def test_a_body_that_would_write_is_never_run_by_the_check(tmp_path) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(PolicySourceError):
        check_policy_source("p", f"open({str(marker)!r}, 'w').write('x')\ndef initialize():\n    return {{}}\n")
    check_policy_source("p", f"open({str(marker)!r}, 'w').write('x')\n" + GOOD)
    assert not marker.exists()


def test_uploads_are_loaded_after_the_builtins_so_an_upload_wins(tmp_path, monkeypatch) -> None:
    pkg = tmp_path / "pkg_builtin_pols"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "same.py").write_text(GOOD.replace('"global"', '"application"'))
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    (uploads / "same.py").write_text(GOOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = PolicyRegistry(modules=["pkg_builtin_pols.same"], entry_point_group=None)
    reg.upload_directories.append(uploads)
    try:
        reg.load_all()
        pol = reg.get("same")
        assert pol.source == "file" and pol.scope == "global" and pol.worker is not None
    finally:
        reg.close()
