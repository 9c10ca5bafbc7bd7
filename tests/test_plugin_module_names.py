"""Built-in plugins load by their full name and by the name they had before the move under `mlsysops`."""

from __future__ import annotations

import pytest

from mlsysops.agents.mape.plugins import PolicyRegistry, import_plugin_module


def test_legacy_builtin_names_resolve_to_the_package() -> None:
    assert import_plugin_module("policies.relocation").__name__ == "mlsysops.policies.relocation"
    assert import_plugin_module("mlsysops.policies.relocation").__name__ == "mlsysops.policies.relocation"


def test_an_unknown_module_still_fails_with_its_own_name() -> None:
    with pytest.raises(ModuleNotFoundError) as err:
        import_plugin_module("policies.no_such_policy")
    assert "no_such_policy" in str(err.value)


def test_a_registry_loads_a_legacy_name_under_the_same_policy_name() -> None:
    reg = PolicyRegistry(modules=["policies.static_placement"], entry_point_group=None)
    changes = reg.load_all()
    assert [(c.kind, c.name) for c in changes] == [("added", "static_placement")]
