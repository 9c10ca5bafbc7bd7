"""The error a plugin's broken contract raises (shared by the registries, the engine and the contracts)."""


class PluginContractError(ValueError):
    """A plugin returned (or declared) something that breaks its contract; the message says what."""
