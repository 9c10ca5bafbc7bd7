"""`from mlsysops.logger_util import logger`, as original MLSysOps policies and mechanisms write it.

A ready `logging.Logger` (`mlsysops.plugins.original`) that goes wherever the agent's logging goes. The
original also had a `test` level between DEBUG and INFO that its mechanisms call (`logger.test(...)`);
it is provided on this logger only (the `logging` module and other loggers are not patched).
"""

from __future__ import annotations

import logging
from typing import Any

TEST = 15   # between DEBUG (10) and INFO (20)
logging.addLevelName(TEST, "TEST")


class _PluginLogger(logging.Logger):
    def test(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        if self.isEnabledFor(TEST):
            self._log(TEST, msg, args, **kwargs)


def _make() -> logging.Logger:
    manager = logging.Logger.manager
    name = "mlsysops.plugins.original"
    existing = manager.loggerDict.get(name)
    if isinstance(existing, _PluginLogger):
        return existing
    # created directly (not through setLoggerClass) so no other logger of the process changes class
    made = _PluginLogger(name)
    made.parent = logging.getLogger("mlsysops.plugins")
    manager.loggerDict[name] = made
    return made


logger = _make()

__all__ = ["TEST", "logger"]
