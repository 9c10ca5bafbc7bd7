"""The continuum's northbound REST API: `create_app`, `ApiBackend`, `ApiServer` (see `.app` for the
run modes and the error conventions).

- `backend`: what the API reads and drives; other agents' views come over the protocol;
- `routers/`: one router per resource (apps, infrastructure, decisions, management, sim, telemetry,
  dashboard, health);
- `models`: request/response models; `bodies`: body parsing and error answers; `views`: infrastructure
  views; `decision_reads`: decision rows; `server`: serving in the running loop.
"""

from mlsysops.continuum.api.app import create_app
from mlsysops.continuum.api.backend import ApiBackend
from mlsysops.continuum.api.deps import API_PREFIX, MAX_DECISIONS
from mlsysops.continuum.api.server import ApiServer

__all__ = ["API_PREFIX", "MAX_DECISIONS", "ApiBackend", "ApiServer", "create_app"]
