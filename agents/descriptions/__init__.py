"""Descriptions of the mlsysops.eu/v1 kinds: models, loading/saving, validation, generated schemas.

Public API (import from here, not from the submodules)::

    docs = load_file("app.yaml", inventory=Inventory(nodes=..., clusters=...))
    app = docs[0].spec            # MLSysOpsApp
    text = dump_yaml(docs)        # Kubernetes form
"""

from agents.descriptions.app import (
    Component,
    Container,
    MLSysOpsApp,
    NodePlacement,
    PlatformRequirements,
    QosMetric,
)
from agents.descriptions.base import API_GROUP, API_VERSION, GROUP_VERSION, Description, SensorRef, Spec
from agents.descriptions.enums import ContinuumLayer, PlacementLayer, Relation
from agents.descriptions.errors import DescriptionError, ValidationIssue
from agents.descriptions.infra import MLSysOpsCluster, MLSysOpsContinuum, MLSysOpsDatacenter
from agents.descriptions.loader import (
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
from agents.descriptions.node import MLSysOpsNode
from agents.descriptions.quantities import (
    ByteQuantity,
    CpuQuantity,
    Duration,
    Frequency,
    GigabyteQuantity,
    parse_duration,
)
from agents.descriptions.semantic import Inventory, check

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
