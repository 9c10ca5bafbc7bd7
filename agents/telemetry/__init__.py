"""Telemetry: the OTel SDK per agent (`otel`), what to collect (`collection`), digests up the tree
(`digest`), a real host's metrics (`host`) and the component push endpoint (`push`)."""

from mlsysops.agents.telemetry.collection import (
           COMPONENT_DEFAULTS,
           NODE_DEFAULTS,
           CollectionPlan,
           app_qos_metrics,
)
from mlsysops.agents.telemetry.otel import AgentTelemetry, from_otel, to_otel

__all__ = ["AgentTelemetry", "CollectionPlan", "COMPONENT_DEFAULTS", "NODE_DEFAULTS", "app_qos_metrics",
           "from_otel", "to_otel"]
