"""MLSysOpsApp: an application made of components, with placement constraints and QoS targets.

Field names follow the original CRD (mlsysops.eu/v1). mlsysops extensions: ``name`` is required,
``policies`` names the policies that manage the app.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from pydantic import Field

from mlsysops.agents.descriptions.base import Description, Number, SensorRef, Spec
from mlsysops.agents.descriptions.enums import (
    AccelerationCall,
    Accelerator,
    AccelerometerModel,
    AccelerometerUnit,
    AirQualityModel,
    AirQualityUnit,
    AppCameraModel,
    AppContinent,
    AppMcuArchitecture,
    AppPermittedAction,
    BarometerModel,
    BarometerUnit,
    CameraType,
    City,
    CloudProvider,
    ContainerRuntime,
    ContinuumLayer,
    Country,
    CpuArchitecture,
    Criticality,
    FpgaModel,
    FrameworkOrAny,
    GpuModel,
    ImagePullPolicy,
    InteractionMetric,
    InteractionType,
    InteractionUnit,
    NodeType,
    OnOff,
    OperatingSystem,
    PlacementLayer,
    PortProtocol,
    Redundancy,
    Relation,
    Resolution,
    RestartPolicy,
    RuntimeClass,
    SatisfactionRelation,
    ScalingCriteria,
    ScalingMode,
    SensorProtocol,
    SystemMetricHint,
    TemperatureModel,
    TemperatureUnit,
)
from mlsysops.agents.descriptions.quantities import ByteQuantity, CpuQuantity, Frequency, GigabyteQuantity

# ---------------------------------------------------------------- placement


class ClusterLocation(Spec):
    continent: list[AppContinent] | None = Field(
        None, description="Continents the hosting clusters may be in."
    )
    country: list[Country] | None = Field(
        None, description="Countries (ISO 3166 alpha-2) the clusters may be in."
    )
    city: list[City] | None = Field(None, description="Cities the clusters may be in.")


class ClusterPlacement(Spec):
    cluster_id: list[str] | None = Field(None, description="Clusters allowed to host the application.")
    instances: int | None = Field(
        None, ge=0, description="Desired number of replicas of the whole application."
    )
    location: ClusterLocation | None = Field(
        None, description="Geographic restrictions on candidate clusters."
    )
    cloud_provider: CloudProvider | None = Field(None, description="Required provider of the cluster.")
    accelerators: list[Accelerator] | None = Field(
        None,
        description="Candidate clusters must have a node with at least one of each of these accelerators.",
    )
    node_types: list[ContinuumLayer] | None = Field(
        None, description="Candidate clusters must have at least one node of each of these layers."
    )


class Scaling(Spec):
    scaling_mode: ScalingMode | None = Field(
        None, description="Manual (fixed instances) or automatic scaling."
    )
    instances: int | None = Field(None, ge=0, description="Number of instances when scaling is manual.")
    scaling_criteria: ScalingCriteria | None = Field(None, description="What drives automatic scaling.")


class NodePlacement(Spec):
    compat_renames: ClassVar[dict[str, str]] = {"mobility": "mobile"}

    continuum_layer: list[PlacementLayer] | None = Field(
        None, description="Layers the component may run on; '*' means anywhere."
    )
    scaling: Scaling | None = Field(None, description="How the component scales.")
    mobile: bool | None = Field(None, description="Whether the component must run on a mobile node.")
    labels: list[str] | None = Field(
        None, description="Labels a node must carry ('key:value' or 'key'), all of them."
    )
    node: str | None = Field(None, description="Pin the component to this node name.")


class SingleNode(Spec):
    compat_renames: ClassVar[dict[str, str]] = {"mobility": "mobile"}

    components: list[str] | None = Field(None, description="Components that must share one node.")
    continuum_layer: list[PlacementLayer] | None = Field(None, description="Layers that node may be on.")
    scaling: Scaling | None = Field(None, description="Scaling of the co-located group.")
    mobile: bool | None = Field(None, description="Whether that node must be mobile.")
    labels: list[str] | None = Field(None, description="Labels that node must carry.")
    node: str | None = Field(None, description="The node that must host the group.")


# ---------------------------------------------------------------- sensors


class AppCameraSensor(Spec):
    compat_renames: ClassVar[dict[str, str]] = {"framerate": "minimum_framerate"}

    model: AppCameraModel | None = Field(None, description="Camera model.")
    camera_type: CameraType | None = Field(None, description="Kind of image the camera produces.")
    minimum_framerate: int | None = Field(None, ge=0, description="Lowest acceptable frames per second.")
    resolution: Resolution | None = Field(None, description="Required resolution.")


class TemperatureSensor(Spec):
    model: TemperatureModel | None = Field(None, description="Temperature sensor model.")
    measurement_min: Number | None = Field(None, description="Lowest measurable value.")
    measurement_max: Number | None = Field(None, description="Highest measurable value.")
    measurement_unit: TemperatureUnit | None = Field(None, description="Unit of the measurements.")
    accuracy: Number | None = Field(None, description="Accuracy in measurement units.")
    sampling_frequency: Number | None = Field(None, description="Samples per second.")


class AccelerometerSensor(Spec):
    model: AccelerometerModel | None = Field(None, description="Accelerometer model.")
    measurement_min: Number | None = None
    measurement_max: Number | None = None
    measurement_unit: AccelerometerUnit | None = None
    accuracy: Number | None = None
    sampling_frequency: Number | None = None


class BarometerSensor(Spec):
    model: BarometerModel | None = Field(None, description="Barometer model.")
    measurement_min: Number | None = None
    measurement_max: Number | None = None
    measurement_unit: BarometerUnit | None = None
    accuracy: Number | None = None
    sampling_frequency: Number | None = None


class AirQualitySensor(Spec):
    model: AirQualityModel | None = Field(None, description="Air quality sensor model.")
    measurement_min: Number | None = None
    measurement_max: Number | None = None
    measurement_unit: AirQualityUnit | None = None
    accuracy: Number | None = None
    sampling_frequency: Number | None = None


APP_SENSOR_KINDS = ("camera", "temperature", "accelerometer", "barometer", "air_quality")


class AppSensor(Spec):
    """One sensor the component needs; exactly one sensor kind is expected per entry."""

    camera: AppCameraSensor | None = None
    temperature: TemperatureSensor | None = None
    accelerometer: AccelerometerSensor | None = None
    barometer: BarometerSensor | None = None
    air_quality: AirQualitySensor | None = None
    endpoint_variable: str | None = Field(
        None, description="Environment variable through which the component receives the sensor endpoint."
    )
    protocol: SensorProtocol | None = Field(None, description="Protocol of the sensor service.")
    instances: int | None = Field(None, ge=0, description="How many sensors of this kind are needed.")

    def refs(self) -> list[SensorRef]:
        out = []
        for kind in APP_SENSOR_KINDS:
            sensor = getattr(self, kind)
            if sensor is not None:
                out.append(SensorRef(kind, str(sensor.model) if sensor.model is not None else None))
        return out


# ---------------------------------------------------------------- containers


class CpuRequirements(Spec):
    requests: CpuQuantity | None = Field(None, description="CPU the container is guaranteed ('250m', 0.5).")
    limits: CpuQuantity | None = Field(None, description="CPU the container may use at most.")
    architecture: list[CpuArchitecture] | None = Field(
        None, description="CPU architectures the image runs on."
    )
    frequency: Frequency | None = Field(
        None, description="Minimum CPU frequency ('1.4GHz'; a plain number below 1000 is read as GHz)."
    )
    performance_indicator: Number | None = Field(
        None, description="Hint (e.g. BogoMIPS) used to filter out nodes that are too slow."
    )


class MemoryRequirements(Spec):
    requests: ByteQuantity | None = Field(None, description="Memory the container is guaranteed ('64Mi').")
    limits: ByteQuantity | None = Field(None, description="Memory the container may use at most.")


class McuRequirements(Spec):
    requests: str | None = Field(None, description="MCU share requested (free text in the original CRD).")
    limits: str | None = Field(None, description="MCU share limit (free text in the original CRD).")
    architecture: list[AppMcuArchitecture] | None = Field(None, description="MCU architectures supported.")
    flash: ByteQuantity | None = Field(
        None, description="Flash memory needed on a far-edge device ('512Ki')."
    )
    frequency: Frequency | None = Field(None, description="Minimum MCU frequency.")
    performance_indicator: Number | None = Field(None, description="Performance hint for filtering devices.")


class GpuRequirements(Spec):
    requests: int | None = Field(None, ge=0, description="Number of GPUs requested.")
    limits: int | None = Field(None, ge=0, description="Maximum number of GPUs.")
    model: GpuModel | None = Field(None, description="Required GPU model.")
    memory: int | None = Field(None, ge=0, description="GPU memory needed, in GB.")
    utilization_request: str | None = Field(None, description="Expected GPU utilisation, in percent.")
    performance_indicator: Number | None = Field(None, description="Performance hint for filtering nodes.")


class FpgaRequirements(Spec):
    model: FpgaModel | None = Field(None, description="Required FPGA model.")
    memory: int | None = Field(None, ge=0, description="FPGA memory needed, in GB.")
    utilization_request: str | None = Field(None, description="Expected FPGA utilisation, in percent.")
    performance_indicator: Number | None = Field(None, description="Performance hint for filtering nodes.")


class PlatformRequirements(Spec):
    cpu: CpuRequirements | None = None
    memory: MemoryRequirements | None = None
    mcu: McuRequirements | None = None
    disk: GigabyteQuantity | None = Field(None, description="Disk space needed; a plain number is GB.")
    gpu: GpuRequirements | None = None
    fpga: FpgaRequirements | None = None


class AccelerationApiCall(Spec):
    call_name: AccelerationCall = Field(description="The acceleration API call the container uses.")
    required_framework: FrameworkOrAny | None = Field(None, description="Framework needed; '*' means any.")


class Port(Spec):
    container_port: int | None = Field(
        None, ge=1, le=65535, description="Port exposed on the component's IP."
    )
    host_ip: str | None = Field(None, description="Host IP to bind the external port to.")
    host_port: int | None = Field(None, ge=1, le=65535, description="Port exposed on the host.")
    name: str | None = Field(None, description="Port name, unique within the component.")
    protocol: PortProtocol | None = Field(None, description="Transport protocol; TCP when omitted.")


class FieldRef(Spec):
    field_path: str | None = Field(None, description="Path of the pod field to read, e.g. status.hostIP.")


class EnvVarSource(Spec):
    field_ref: FieldRef | None = None


class EnvVar(Spec):
    name: str = Field(description="Variable name.")
    value: str | None = Field(None, description="Literal value.")
    value_from: EnvVarSource | None = Field(None, description="Take the value from a pod field.")


class Container(Spec):
    image: str | None = Field(None, description="Container image reference.")
    command: list[str] | None = Field(None, description="Entrypoint and arguments.")
    image_pull_policy: ImagePullPolicy | None = Field(None, description="When to pull the image.")
    acceleration_api: list[AccelerationApiCall] | None = Field(None, description="Acceleration calls used.")
    platform_requirements: PlatformRequirements | None = Field(
        None, description="Resources the container needs."
    )
    ports: list[Port] | None = Field(None, description="Ports the container exposes.")
    env: list[EnvVar] | None = Field(None, description="Environment variables.")


# ---------------------------------------------------------------- component


class ComponentMetadata(Spec):
    name: str = Field(min_length=1, description="Component name, unique within the application.")
    uid: str | None = Field(None, description="Identifier assigned by the framework, not by the user.")


class RuntimeConfiguration(Spec):
    config_specification_file: str | None = Field(
        None, description="JSON file describing the runtime knobs the component offers."
    )
    config_file_path: str | None = Field(
        None, description="Absolute path inside the container where the component reads that file."
    )


class QosMetric(Spec):
    application_metric_id: str | None = Field(None, description="Application metric, e.g. response_time_ms.")
    target: Number | None = Field(None, description="Target value of the metric.")
    relation: Relation | None = Field(None, description="How the measured value must relate to the target.")
    system_metrics_hints: list[SystemMetricHint] | None = Field(
        None, description="System metrics that influence this application metric."
    )


class LocationRestrictions(Spec):
    gdpr: bool | None = Field(None, description="Only GDPR-compliant storage locations may be used.")
    # extensions (not in the original CRD): where the bucket's replicas may live
    regions: list[str] | None = Field(None, description="Storage sites must be in one of these regions.")
    sites: list[str] | None = Field(None, description="Storage sites (cluster ids) the replicas may use.")
    layers: list[ContinuumLayer] | None = Field(None, description="Continuum layers the replicas may use.")


class BucketAccessTarget(Spec):
    component: str = Field(min_length=1, description="Component that reads/writes the bucket.")
    max_latency_ms: Number = Field(gt=0, description="Target p95 object access latency for that component.")


class Bucket(Spec):
    compat_renames: ClassVar[dict[str, str]] = {"redundancy": "reduncancy"}

    bucket_id: str = Field(description="Bucket identifier.")
    policy_update_token: str | None = Field(
        None, description="Token allowing the bucket policy to be updated."
    )
    location_restrictions: LocationRestrictions | None = None
    reduncancy: Redundancy | None = Field(
        None, description="Redundancy level (field name as in the original CRD)."
    )
    max_latency: Number | None = None
    min_download_speed: Number | None = None
    server_side_encryption: OnOff | None = None
    # extensions: durability and per-component access targets
    replicas: int | None = Field(None, ge=1, le=5, description=(
        "Sites holding a full copy; default from reduncancy (none: 1, one: 2, high: 3), else 1."))
    access_latency: list[BucketAccessTarget] | None = Field(
        None, description="Access-latency targets of the components that use the bucket.")

    @property
    def replica_count(self) -> int:
        if self.replicas is not None:
            return self.replicas
        return {"none": 1, "one": 2, "high": 3}.get(self.reduncancy.value if self.reduncancy else "none", 1)


class Storage(Spec):
    buckets: list[Bucket] | None = Field(None, description="Storage buckets of the component.")


class Component(Spec):
    metadata: ComponentMetadata = Field(description="Name (and framework-assigned uid).")
    node_placement: NodePlacement | None = Field(None, description="Constraints on the hosting node.")
    depends_on: list[str] | None = Field(
        None, description="Components that must be running before this one is started."
    )
    runtime_configuration: RuntimeConfiguration | None = None
    sensors: list[AppSensor] | None = Field(None, description="Sensors the component needs on its node.")
    qos_metrics: list[QosMetric] | None = Field(None, description="Application-level QoS targets.")
    storage: Storage | None = None
    data_sensitivity: bool | None = Field(None, description="Whether the component handles sensitive data.")
    data_criticality: Criticality | None = Field(None, description="Trust level needed for the component.")
    external_component: bool | None = Field(
        None, description="Deployed and removed by MLSysOps but not otherwise managed."
    )
    external_access: bool | None = Field(None, description="Reachable from outside its cluster.")
    host_network: bool | None = Field(None, description="Use the host network namespace (default false).")
    runtime_class_name: RuntimeClass | None = Field(None, description="Container runtime class.")
    restart_policy: RestartPolicy | None = Field(None, description="Restart policy; Always when omitted.")
    os: OperatingSystem | None = Field(None, description="Required node operating system.")
    node_type: NodeType | None = Field(None, description="Required kind of node (VM, native, bare metal).")
    container_runtime: ContainerRuntime | None = Field(None, description="Required container runtime.")
    containers: list[Container] = Field(min_length=1, description="The containers of the component.")

    @property
    def name(self) -> str:
        return self.metadata.name

    def _requirements(self) -> list[PlatformRequirements]:
        return [c.platform_requirements for c in self.containers if c.platform_requirements is not None]

    def _total(self, pick: Callable[[PlatformRequirements], object], require_all: bool) -> float | None:
        total, missing = 0.0, False
        reqs = self._requirements()
        if len(reqs) < len(self.containers):
            missing = True
        for req in reqs:
            value = pick(req)
            if value is None:
                missing = True
            else:
                total += value.value  # type: ignore[attr-defined]
        return None if (require_all and missing) else total

    @property
    def cpu_request_cores(self) -> float:
        """Sum of CPU requests over containers (0 for containers without one)."""
        return self._total(lambda r: r.cpu.requests if r.cpu else None, False) or 0.0

    @property
    def cpu_limit_cores(self) -> float | None:
        """Sum of CPU limits, or None when any container is unlimited."""
        return self._total(lambda r: r.cpu.limits if r.cpu else None, True)

    @property
    def memory_request_bytes(self) -> int:
        return round(self._total(lambda r: r.memory.requests if r.memory else None, False) or 0)

    @property
    def memory_limit_bytes(self) -> int | None:
        """Sum of memory limits in bytes, or None when any container is unlimited."""
        total = self._total(lambda r: r.memory.limits if r.memory else None, True)
        return None if total is None else round(total)

    @property
    def required_sensors(self) -> list[SensorRef]:
        return [ref for sensor in self.sensors or [] for ref in sensor.refs()]

    @property
    def gpu_required(self) -> bool:
        return any(r.gpu is not None for r in self._requirements()) or self.runtime_class_name in (
            RuntimeClass.nvidia,
            RuntimeClass.nvidia_experimental,
        )

    @property
    def architectures(self) -> list[str] | None:
        """CPU architectures every container supports (intersection); None when unconstrained."""
        allowed: set[str] | None = None
        for req in self._requirements():
            if req.cpu is not None and req.cpu.architecture:
                arches = {str(a) for a in req.cpu.architecture}
                allowed = arches if allowed is None else allowed & arches
        return sorted(allowed) if allowed is not None else None


# ---------------------------------------------------------------- app


class InteractionMetricSpec(Spec):
    system_metric_id: InteractionMetric | None = Field(None, description="System metric of the interaction.")
    target: Number | None = None
    measurement_unit: InteractionUnit | None = None
    relation: Relation | None = None


class ComponentInteraction(Spec):
    component_name1: str | None = Field(None, description="Source component.")
    type: InteractionType | None = Field(None, description="Direction of the traffic.")
    component_name2: str | None = Field(None, description="Destination component.")
    interaction_criticality: Criticality | None = Field(None, description="Trust level of the interaction.")
    interaction_metrics: list[InteractionMetricSpec] | None = None


class AchievementWeight(Spec):
    metric_id: str | None = Field(None, description="A qos_metrics application_metric_id.")
    weight: Number | None = None


class GlobalSatisfaction(Spec):
    threshold: Number | None = Field(None, description="Minimum satisfaction, in (0, 1].")
    relation: SatisfactionRelation | None = None
    achievement_weights: list[AchievementWeight] | None = None


class MLSysOpsApp(Description):
    """An application: components, their placement constraints, interactions and targets."""

    kind: ClassVar[str] = "MLSysOpsApp"
    plural: ClassVar[str] = "mlsysopsapps"
    short_name: ClassVar[str] = "mlsapp"
    id_field: ClassVar[str] = "name"

    name: str = Field(min_length=1, description="Application name (mlsysops: required).")
    cluster_placement: ClusterPlacement | None = Field(
        None, description="Constraints on the hosting clusters."
    )
    single_node: list[SingleNode] | None = Field(
        None, description="Groups of components that must share one node; overrides their node_placement."
    )
    components: list[Component] = Field(min_length=1, description="The components of the application.")
    component_interactions: list[ComponentInteraction] | None = None
    permitted_actions: list[AppPermittedAction] | None = Field(
        None, description="Actions the agents may take on the application."
    )
    global_satisfaction: GlobalSatisfaction | None = None
    policies: list[str] | None = Field(
        None, description="mlsysops extension: names of the policies that manage this application."
    )

    def component(self, name: str) -> Component | None:
        return next((c for c in self.components if c.name == name), None)
