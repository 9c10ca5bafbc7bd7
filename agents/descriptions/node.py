"""MLSysOpsNode: one machine of the continuum, its hardware, sensors, network and power.

Field names follow the original CRD (including its spelling ``suported_frameworks``). mlsysops
extensions: ``name`` is required; ``power.availability`` (used by the reference examples) is accepted.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, ClassVar

from pydantic import Field, StringConstraints

from mlsysops.agents.descriptions.app import (
    AccelerometerSensor,
    AirQualitySensor,
    BarometerSensor,
    TemperatureSensor,
)
from mlsysops.agents.descriptions.base import Description, Number, SensorRef, Spec
from mlsysops.agents.descriptions.enums import (
    AccelerationCall,
    Availability,
    Co2Unit,
    ContainerRuntime,
    ContinuumLayer,
    CpuArchitecture,
    EnergyUnit,
    FpgaModel,
    Framework,
    GpuModel,
    InterfaceMode,
    InterfaceType,
    NodeCameraModel,
    NodeMcuArchitecture,
    NodePermittedAction,
    NodeType,
    OperatingSystem,
    Platform,
    PowerMode,
    PowerUnit,
    Relation,
    RenewableSource,
    Resolution,
    SensorProtocol,
    WattHour,
)
from mlsysops.agents.descriptions.quantities import ByteQuantity, Frequency, GigabyteQuantity

# ---------------------------------------------------------------- sensors


class NodeCameraSensor(Spec):
    compat_renames: ClassVar[dict[str, str]] = {"minimum_framerate": "framerate"}

    instances: int | None = Field(None, ge=0, description="Number of identical cameras.")
    model: NodeCameraModel | None = Field(None, description="Camera model.")
    camera_type: str | None = Field(None, description="Camera type (free text in the node CRD, e.g. rgb).")
    framerate: int | None = Field(None, ge=0, description="Frames per second the camera delivers.")
    supported_resolutions: list[Resolution] | None = Field(None, description="Resolutions the camera offers.")


class NodeTemperatureSensor(TemperatureSensor):
    instances: int | None = Field(None, ge=0, description="Number of identical sensors.")


class FrequencyRange(Spec):
    min: Number | None = None
    max: Number | None = None


class GenericSensor(Spec):
    """Humidity, sound and CO2 sensors: free-text model and unit, sampling frequency as a range."""

    model: str | None = None
    measurement_min: Number | None = None
    measurement_max: Number | None = None
    measurement_unit: str | None = None
    accuracy: Number | None = None
    sampling_frequency: FrequencyRange | None = None


NODE_SENSOR_KINDS = (
    "camera",
    "temperature",
    "accelerometer",
    "humidity",
    "sound",
    "co2",
    "barometer",
    "air_quality",
)


class NodeSensor(Spec):
    """A sensor offered by the node as a service."""

    camera: NodeCameraSensor | None = None
    temperature: NodeTemperatureSensor | None = None
    accelerometer: AccelerometerSensor | None = None
    humidity: GenericSensor | None = Field(None, description="Relative humidity sensor.")
    sound: GenericSensor | None = None
    co2: GenericSensor | None = None
    barometer: BarometerSensor | None = None
    air_quality: AirQualitySensor | None = None
    instances: int | None = Field(None, ge=0, description="Number of instances.")
    protocol: SensorProtocol | None = Field(None, description="Protocol of the sensor service.")
    endpoint: str | None = Field(None, description="Where the measurements are served.")

    def refs(self) -> list[SensorRef]:
        out = []
        for kind in NODE_SENSOR_KINDS:
            sensor = getattr(self, kind)
            if sensor is not None:
                out.append(SensorRef(kind, str(sensor.model) if sensor.model is not None else None))
        return out


# ---------------------------------------------------------------- platform


class DistributedStorageService(Spec):
    member: bool | None = Field(None, description="Whether the node takes part in the storage service.")
    available_space: Number | None = Field(None, description="Space offered to the storage service, in GB.")


class Environment(Spec):
    node_type: NodeType | None = Field(None, description="VM, native OS or bare metal.")
    os: OperatingSystem | None = None
    container_runtime: list[ContainerRuntime] | None = Field(None, description="Runtimes installed.")


class SupportedPlatform(Spec):
    compat_renames: ClassVar[dict[str, str]] = {"supported_frameworks": "suported_frameworks"}

    name: Platform | None = None
    suported_frameworks: list[Framework] | None = Field(
        None, description="Frameworks available on this platform (field name as in the original CRD)."
    )


class NodeAccelerationApi(Spec):
    call_name: AccelerationCall = Field(description="The acceleration API call offered.")
    supported_platforms: list[SupportedPlatform] = Field(description="Platforms that implement it.")


class NodeCpu(Spec):
    model: str | None = Field(None, description="CPU model name.")
    architecture: CpuArchitecture | None = None
    cores: int | None = Field(None, ge=0)
    frequency: list[Frequency] | None = Field(
        None, description="Available CPU frequencies ('1.4GHz'; plain numbers: see quantities)."
    )
    performance_indicator: Number | None = Field(None, description="Processing capability (e.g. BogoMIPS).")


class NodeMcu(Spec):
    architecture: NodeMcuArchitecture | None = None
    flash: ByteQuantity | None = Field(None, description="Flash memory size.")
    cores: int | None = Field(None, ge=0)
    frequency: Frequency | None = None
    performance_indicator: Number | None = None


class NodeGpu(Spec):
    model: GpuModel | None = None
    memory: int | None = Field(None, ge=0, description="GPU memory in GB.")
    instances: int | None = Field(None, ge=0, description="Number of GPUs.")
    performance_indicator: Number | None = None


class NodeFpga(Spec):
    model: FpgaModel | None = None
    memory: int | None = Field(None, ge=0, description="FPGA memory in GB.")
    performance_indicator: Number | None = None


class Hardware(Spec):
    cpu: NodeCpu | None = None
    mcu: NodeMcu | None = Field(None, description="Microcontroller of a far-edge device.")
    memory: GigabyteQuantity | None = Field(None, description="Memory; a plain number is GB (GiB).")
    disk: GigabyteQuantity | None = Field(None, description="Local disk; a plain number is GB (GiB).")
    gpu: NodeGpu | None = None
    fpga: NodeFpga | None = None


# ---------------------------------------------------------------- network


class BasicInterface(Spec):
    name: InterfaceType | None = Field(None, description="Technology of the control-traffic interface.")
    range: Number | None = Field(None, description="Range of a wireless interface.")
    interface_name: str | None = None
    application_traffic_permission: bool | None = Field(
        None, description="Whether application traffic may use this interface too."
    )


class PairingInfo(Spec):
    ip_address: str | None = None
    network_ssid: str | None = Field(None, description="SSID or PAN id.")
    net_key: str | None = Field(None, description="Network password.")


class RedirectionInterface(Spec):
    connection_type: InterfaceType = Field(description="Technology of the interface.")
    range: Number | None = None
    interface_name: str | None = None
    mode: InterfaceMode | None = None
    hardware_address: str | None = None
    pairing_info: PairingInfo | None = None


class NetworkResources(Spec):
    basic_interface: BasicInterface | None = None
    redirection_interface: list[RedirectionInterface] | None = Field(
        None, description="Interfaces application traffic may be redirected to."
    )


# ---------------------------------------------------------------- power


class EnergyTarget(Spec):
    value: Number | None = None
    relation: Relation | None = None
    measurement_unit: EnergyUnit | None = None


class Co2Target(Spec):
    value: Number | None = None
    measurement_unit: Co2Unit | None = None
    relation: Relation | None = None


class PowerTarget(Spec):
    consumption: EnergyTarget | None = None
    cost: EnergyTarget | None = Field(None, description="Cost per measurement unit (no currency).")
    co2_emission: Co2Target | None = Field(None, description="CO2 emitted per energy unit.")


class MaxConsumption(Spec):
    value: Number | None = None
    measurement_unit: PowerUnit | None = None


class EnergyLevels(Spec):
    levels: list[Number] | None = None
    measurement_unit: WattHour | None = None


class Renewable(Spec):
    name: RenewableSource | None = None
    production: EnergyLevels | None = None


class Battery(Spec):
    capacity: EnergyLevels | None = None


class EnergyPrice(Spec):
    value: Number | None = None
    measurement_unit: EnergyUnit | None = None


class Co2Amount(Spec):
    value: Number | None = None
    measurement_unit: Co2Unit | None = None


TimeWindow = Annotated[str, StringConstraints(pattern=r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$")]


class PowerWindow(Spec):
    """mlsysops extension from the reference examples: supply available in some time windows."""

    mode: PowerMode | None = None
    value: Number | None = Field(None, description="Maximum consumption within the windows.")
    measurement_unit: EnergyUnit | None = None
    time_windows: list[TimeWindow] | None = Field(None, description="Daily windows 'HH:MM-HH:MM'.")
    cost: EnergyPrice | None = None
    co2_emission: Co2Amount | None = None


class Power(Spec):
    compat_extensions: ClassVar[dict[str, str]] = {
        "availability": "power.availability is used by the original examples but is not in the original "
        "MLSysOpsNode CRD; accepted as an mlsysops extension",
    }

    target: PowerTarget | None = Field(None, description="Targets set by the node owner.")
    max_consumption: MaxConsumption | None = None
    grid: bool | None = Field(None, description="Whether the node is grid-powered.")
    renewable: list[Renewable] | None = None
    battery: Battery | None = None
    availability: list[PowerWindow] | None = Field(None, description="mlsysops extension: supply windows.")


# ---------------------------------------------------------------- node


class MLSysOpsNode(Description):
    """A node of the continuum."""

    kind: ClassVar[str] = "MLSysOpsNode"
    plural: ClassVar[str] = "mlsysopsnodes"
    short_name: ClassVar[str] = "mlsnode"
    id_field: ClassVar[str] = "name"
    compat_renames: ClassVar[dict[str, str]] = {"mobility": "mobile"}

    name: str = Field(min_length=1, description="Node name (mlsysops: required).")
    labels: list[str] | None = Field(
        None, description="Labels used by placement filters ('key:value' or 'key')."
    )
    continuum_layer: ContinuumLayer = Field(description="Layer of the continuum the node is on.")
    cluster_id: str | None = Field(None, description="Cluster the node belongs to.")
    datacenter_id: str | None = Field(
        None, description="Datacenter of the node; without one the node is standalone, placed by location."
    )
    availability: Availability | None = Field(
        None, description="Whether the node may go away (e.g. on battery) or is stable."
    )
    mobile: bool | None = Field(None, description="Whether the node moves.")
    location: list[Number] | None = Field(None, description="Fixed position [longitude, latitude].")
    sensors: list[NodeSensor] | None = Field(None, description="Sensors offered as services.")
    permitted_actions: list[NodePermittedAction] | None = Field(
        None, description="Actions the agents may take on the node."
    )
    distributed_storage_service: DistributedStorageService | None = None
    environment: Environment = Field(description="Software environment.")
    acceleration_api: list[NodeAccelerationApi] | None = Field(
        None, description="Acceleration calls offered."
    )
    hardware: Hardware = Field(description="Hardware resources.")
    network_resources: NetworkResources | None = None
    power: Power | None = None

    @property
    def layer(self) -> ContinuumLayer:
        return self.continuum_layer

    @property
    def cpu_cores(self) -> int:
        """CPU (or MCU) cores; 0 when not described."""
        hw = self.hardware
        if hw.cpu is not None and hw.cpu.cores is not None:
            return hw.cpu.cores
        if hw.mcu is not None and hw.mcu.cores is not None:
            return hw.mcu.cores
        return 0

    @property
    def memory_bytes(self) -> int:
        return round(self.hardware.memory.value) if self.hardware.memory is not None else 0

    @property
    def gpu_present(self) -> bool:
        gpu = self.hardware.gpu
        return gpu is not None and (gpu.instances is None or gpu.instances > 0)

    @property
    def architecture(self) -> str | None:
        cpu = self.hardware.cpu
        return str(cpu.architecture) if cpu is not None and cpu.architecture is not None else None

    @property
    def cpu_frequencies_hz(self) -> list[float]:
        cpu = self.hardware.cpu
        return sorted(f.value for f in cpu.frequency or []) if cpu is not None else []

    @property
    def sensor_refs(self) -> list[SensorRef]:
        return [ref for sensor in self.sensors or [] for ref in sensor.refs()]

    @property
    def sensor_names(self) -> list[str]:
        return [ref.type for ref in self.sensor_refs]

    def has_sensor(self, kind: str, model: str | None = None) -> bool:
        return any(r.type == kind and (model is None or r.model == model) for r in self.sensor_refs)

    def has_labels(self, required: Iterable[str]) -> bool:
        """True when every required label ('key:value' or 'key') is on the node."""
        own = set(self.labels or [])
        keys = {label.split(":", 1)[0] for label in own}
        return all(label in own or (":" not in label and label in keys) for label in required)
