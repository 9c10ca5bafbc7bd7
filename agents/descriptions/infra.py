"""MLSysOpsCluster, MLSysOpsContinuum and MLSysOpsDatacenter: the inventory around nodes."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from mlsysops.agents.descriptions.base import Description, Number
from mlsysops.agents.descriptions.enums import (
    City,
    CloudProvider,
    ContinuumLayer,
    Country,
    DatacenterContinent,
)


class MLSysOpsCluster(Description):
    """A cluster: a set of nodes managed by one cluster agent."""

    kind: ClassVar[str] = "MLSysOpsCluster"
    plural: ClassVar[str] = "mlsysopsclusters"
    short_name: ClassVar[str] = "mlscluster"
    id_field: ClassVar[str] = "cluster_id"

    name: str | None = Field(None, description="Display name (the original framework's docs and CLI write it; "
                                                "the identifier is cluster_id).")
    cluster_id: str = Field(min_length=1, description="Unique cluster identifier.")
    datacenter_id: str | None = Field(None, description="Datacenter the cluster is in.")
    nodes: list[str] = Field(description="Names of the nodes registered in the cluster.")


class MLSysOpsContinuum(Description):
    """The continuum (one per slice): the set of clusters."""

    kind: ClassVar[str] = "MLSysOpsContinuum"
    plural: ClassVar[str] = "mlsysopscontinuums"
    short_name: ClassVar[str] = "mlscontinuum"
    id_field: ClassVar[str] = "continuum_id"

    name: str | None = Field(None, description="Display name (the original framework's docs write it; the "
                                                "identifier is continuum_id).")
    continuum_id: str = Field(min_length=1, description="Unique continuum identifier.")
    clusters: list[str] = Field(description="Identifiers of the registered clusters.")


class MLSysOpsDatacenter(Description):
    """A datacenter: a group of nodes in one place, member of a cluster."""

    kind: ClassVar[str] = "MLSysOpsDatacenter"
    plural: ClassVar[str] = "mlsysopsdatacenters"
    short_name: ClassVar[str] = "mlsdatacenter"
    id_field: ClassVar[str] = "datacenter_id"

    datacenter_id: str = Field(min_length=1, description="Unique datacenter identifier.")
    cluster_id: str = Field(description="Cluster the datacenter belongs to.")
    continuum: ContinuumLayer = Field(description="Continuum layer of the datacenter.")
    nodes: list[str] = Field(description="Names of the nodes in the datacenter.")
    continent: DatacenterContinent | None = None
    country: Country | None = Field(None, description="Country (ISO 3166 alpha-2).")
    city: City | None = None
    location: list[Number] | None = Field(None, description="Position [longitude, latitude].")
    cloud_provider: CloudProvider | None = None
