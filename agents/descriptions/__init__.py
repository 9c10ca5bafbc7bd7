"""Descriptions of the mlsysops.eu/v1 kinds: models, loading/saving, validation, generated schemas.

Public API (import from here, not from the submodules)::

    docs = load_file("app.yaml", inventory=Inventory(nodes=..., clusters=...))
    app = docs[0].spec            # MLSysOpsApp
    text = dump_yaml(docs)        # Kubernetes form
"""

from mlsysops.agents.descriptions.app import (
    Component,
    Container,
    MLSysOpsApp,
    NodePlacement,
    PlatformRequirements,
    QosMetric,
)
from mlsysops.agents.descriptions.base import (
    API_GROUP,
    API_VERSION,
    GROUP_VERSION,
    Description,
    SensorRef,
    Spec,
)
from mlsysops.agents.descriptions.enums import ContinuumLayer, PlacementLayer, Relation
from mlsysops.agents.descriptions.errors import DescriptionError, ValidationIssue
from mlsysops.agents.descriptions.infra import MLSysOpsCluster, MLSysOpsContinuum, MLSysOpsDatacenter
from mlsysops.agents.descriptions.loader import (
    KINDS,
    Document,
    dump_yaml,
    load_file,
    load_obj,
    load_text,
    to_dict,
    to_k8s,
    to_wrapped,
    validate_spec,
)
from mlsysops.agents.descriptions.node import MLSysOpsNode
from mlsysops.agents.descriptions.quantities import (
    ByteQuantity,
    CpuQuantity,
    Duration,
    Frequency,
    GigabyteQuantity,
    parse_duration,
)
from mlsysops.agents.descriptions.semantic import Inventory, check

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "GROUP_VERSION",
    "KINDS",
    "ByteQuantity",
    "Component",
    "Container",
    "ContinuumLayer",
    "CpuQuantity",
    "Description",
    "DescriptionError",
    "Document",
    "Duration",
    "Frequency",
    "GigabyteQuantity",
    "Inventory",
    "MLSysOpsApp",
    "MLSysOpsCluster",
    "MLSysOpsContinuum",
    "MLSysOpsDatacenter",
    "MLSysOpsNode",
    "NodePlacement",
    "PlacementLayer",
    "PlatformRequirements",
    "QosMetric",
    "Relation",
    "SensorRef",
    "Spec",
    "ValidationIssue",
    "check",
    "dump_yaml",
    "load_file",
    "load_obj",
    "load_text",
    "parse_duration",
    "to_dict",
    "to_k8s",
    "to_wrapped",
    "validate_spec",
]
