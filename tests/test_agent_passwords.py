"""Agent passwords: generated per agent for `mlsysops up`, required (never defaulted) per process."""

from __future__ import annotations

import pytest

from mlsysops.agents.slice_config import SliceConfig, load_slice
from mlsysops.cli.agent_cmd import agent_password
from mlsysops.cli.slice_assembly import PASSWORD_ENV, PasswordError, SliceAssembly
from tests.support import DEMO


def test_every_agent_of_up_gets_its_own_password_and_keeps_it() -> None:
    asm = SliceAssembly(load_slice(DEMO), xmpp_port=5222)
    jids = asm.all_jids()
    passwords = {jid: asm.password_for(jid) for jid in jids}
    assert len(set(passwords.values())) == len(jids) and all(len(p) >= 24 for p in passwords.values())
    assert {jid: asm.password_for(jid) for jid in jids} == passwords   # a restarted agent logs in again
    assert str(asm.continuum_agent().jid) in passwords


def test_a_process_agent_needs_a_password(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    spec = load_slice(DEMO)
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    with pytest.raises(PasswordError, match="no XMPP password"):
        agent_password(spec, None)
    monkeypatch.setenv(PASSWORD_ENV, "")
    with pytest.raises(PasswordError, match="empty"):
        agent_password(spec, None)
    monkeypatch.setenv(PASSWORD_ENV, "from-env")
    assert agent_password(spec, None) == "from-env"
    empty = tmp_path / "pw"
    empty.write_text("\n")
    with pytest.raises(PasswordError, match="empty"):
        agent_password(spec, empty)
    empty.write_text("from-file\n")
    assert agent_password(spec, empty) == "from-file"


def test_the_slices_password_env_must_be_set_and_non_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = load_slice(DEMO)
    spec.config = SliceConfig.model_validate({**spec.config.model_dump(exclude_none=True),
                                              "xmpp": {"password_env": "MY_AGENT_PW"}})
    monkeypatch.delenv("MY_AGENT_PW", raising=False)
    with pytest.raises(PasswordError, match="MY_AGENT_PW"):
        agent_password(spec, None)
    monkeypatch.setenv("MY_AGENT_PW", "  ")
    with pytest.raises(PasswordError, match="empty"):
        agent_password(spec, None)
    monkeypatch.setenv("MY_AGENT_PW", "s3cret")
    assert agent_password(spec, None) == "s3cret"
