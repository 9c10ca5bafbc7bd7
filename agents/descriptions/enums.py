"""Enumerations of the mlsysops.eu/v1 descriptions, with the values of the original CRDs.

Where the original App and Node CRDs disagree on spelling (camera models, MCU architecture casing,
continent casing) each keeps its own enum so that files valid under the original CRDs stay valid; the
loader normalises case/separator slips with a warning.
"""

from __future__ import annotations

from enum import Enum, StrEnum


class ContinuumLayer(StrEnum):
    cloud = "cloud"
    edge_infrastructure = "edge_infrastructure"
    edge = "edge"
    far_edge = "far_edge"


class PlacementLayer(StrEnum):
    """A layer a component may run on; ``*`` means anywhere on the continuum."""

    cloud = "cloud"
    far_edge = "far_edge"
    edge_infrastructure = "edge_infrastructure"
    edge = "edge"
    any = "*"


class AppContinent(StrEnum):
    Europe = "Europe"
    Asia = "Asia"


class DatacenterContinent(StrEnum):
    europe = "europe"
    asia = "asia"
    africa = "africa"
    australia = "australia"
    north_america = "north_america"
    south_america = "south_america"
    antarctica = "antarctica"


class Country(StrEnum):
    el = "el"
    it = "it"
    fr = "fr"
    nl = "nl"
    ie = "ie"
    pt = "pt"
    dk = "dk"
    il = "il"


class City(StrEnum):
    volos = "volos"
    athens = "athens"
    rende = "rende"
    milan = "milan"
    lille = "lille"
    delft = "delft"
    dublin = "dublin"
    aveiro = "aveiro"
    porto = "porto"
    aarhus = "aarhus"
    jerusalem = "jerusalem"


class CloudProvider(StrEnum):
    private = "private"
    aws = "aws"
    microsoft_azure = "microsoft_azure"
    gcp = "gcp"


class Accelerator(StrEnum):
    gpu = "gpu"
    fpga = "fpga"
    tpu = "tpu"


class ScalingMode(StrEnum):
    manual = "manual"
    auto = "auto"


class ScalingCriteria(StrEnum):
    min_cpu_utilization = "min_cpu_utilization"
    max_cpu_utilization = "max_cpu_utilization"
    min_memory_percent = "min_memory_percent"
    max_memory_percent = "max_memory_percent"
    min_requests_per_sec = "min_requests_per_sec"
    max_request_per_sec = "max_request_per_sec"
    min_number_of_instances = "min_number_of_instances"
    max_number_of_instances = "max_number_of_instances"


class AppCameraModel(StrEnum):
    d455 = "d455"
    imx477 = "imx477"
    picamera_v2 = "picamera-v2"


class NodeCameraModel(StrEnum):
    imx415 = "imx415"
    imx219 = "imx219"
    d455 = "d455"
    imx477 = "imx477"
    picamera_v2 = "picamera-v2"


class CameraType(StrEnum):
    rgb = "rgb"
    nir = "nir"
    thermal = "thermal"
    monocular = "monocular"


class Resolution(StrEnum):
    r1024x768 = "1024x768"
    r4056x3040 = "4056x3040"


class TemperatureModel(StrEnum):
    sdc30 = "sdc30"
    ds18b20 = "ds18b20"


class TemperatureUnit(StrEnum):
    celsius = "celsius"
    fahrenheit = "fahrenheit"


class AccelerometerModel(StrEnum):
    smt3038 = "3038-smt"


class AccelerometerUnit(StrEnum):
    m_s2 = "m/s^2"


class BarometerModel(StrEnum):
    sb100 = "sb-100"


class BarometerUnit(StrEnum):
    pa = "pa"


class AirQualityModel(StrEnum):
    mq135 = "mq-135"


class AirQualityUnit(StrEnum):
    ug_m3 = "ug/m^3"


class SensorProtocol(StrEnum):
    MQTT = "MQTT"
    RTSP = "RTSP"


class Relation(StrEnum):
    lower_or_equal = "lower_or_equal"
    greater_or_equal = "greater_or_equal"
    equal = "equal"
    lower_than = "lower_than"
    greater_than = "greater_than"


class SatisfactionRelation(StrEnum):
    greater_or_equal = "greater_or_equal"
    equal = "equal"
    greater_than = "greater_than"


class SystemMetricHint(StrEnum):
    cpu_frequency = "cpu_frequency"


class Redundancy(StrEnum):
    high = "high"
    one = "one"
    none = "none"


class OnOff(StrEnum):
    on = "on"
    off = "off"


class Criticality(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"


class RuntimeClass(StrEnum):
    nvidia = "nvidia"
    default = "default"
    kata_fc = "kata-fc"
    kata_dragon = "kata-dragon"
    urunc = "urunc"
    crun = "crun"
    lunatic = "lunatic"
    nvidia_experimental = "nvidia-experimental"
    spin = "spin"
    wasmedge = "wasmedge"
    slight = "slight"


class RestartPolicy(StrEnum):
    Always = "Always"
    OnFailure = "OnFailure"
    Never = "Never"


class OperatingSystem(StrEnum):
    ubuntu = "ubuntu"
    kali = "kali"
    zephyr = "zephyr"


class NodeType(StrEnum):
    virtualized = "virtualized"
    native = "native"
    bare_metal = "bare_metal"


class ContainerRuntime(StrEnum):
    containerd = "containerd"
    docker = "docker"
    emb_serve = "emb_serve"


class ImagePullPolicy(StrEnum):
    Always = "Always"
    Never = "Never"
    IfNotPresent = "IfNotPresent"


class AccelerationCall(StrEnum):
    calc_optical_flow = "calc_optical_flow"
    image_inference = "image_inference"


class Framework(StrEnum):
    pytorch = "pytorch"
    tensorflow = "tensorflow"
    opencl = "opencl"


class FrameworkOrAny(StrEnum):
    pytorch = "pytorch"
    tensorflow = "tensorflow"
    opencl = "opencl"
    any = "*"


class CpuArchitecture(StrEnum):
    arm64 = "arm64"
    amd64 = "amd64"


class AppMcuArchitecture(StrEnum):
    arm_m4 = "arm-m4"


class NodeMcuArchitecture(StrEnum):
    arm_M4 = "arm-M4"


class GpuModel(StrEnum):
    k80 = "k80"
    k40 = "k40"


class FpgaModel(StrEnum):
    zcu102 = "zcu102"


class PortProtocol(StrEnum):
    UDP = "UDP"
    TCP = "TCP"
    SCTP = "SCTP"


class InteractionType(StrEnum):
    ingress = "ingress"
    egress = "egress"


class InteractionMetric(StrEnum):
    latency = "latency"
    bandwidth = "bandwidth"
    end_to_end_invocation_delay = "end_to_end_invocation_delay"


class InteractionUnit(StrEnum):
    milliseconds = "milliseconds"
    Mbps = "Mbps"
    seconds = "seconds"


class AppPermittedAction(StrEnum):
    component_relocation = "component_relocation"
    traffic_redirection = "traffic_redirection"
    change_container_image = "change_container_image"
    change_container_runtime_class = "change_container_runtime_class"
    change_container_cpu_set = "change_container_cpu_set"
    change_container_resource_requirements = "change_container_resource_requirements"
    acceleration = "acceleration"
    any = "*"


class NodePermittedAction(StrEnum):
    set_power_cap = "set_power_cap"
    traffic_redirection = "traffic_redirection"
    acceleration = "acceleration"
    cpu_frequency = "cpu_frequency"
    gpu_frequency = "gpu_frequency"
    change_container_cpu_set = "change_container_cpu_set"
    change_container_image = "change_container_image"
    any = "*"


class Availability(StrEnum):
    transient = "transient"
    stable = "stable"


class Platform(StrEnum):
    cpu = "cpu"
    gpu = "gpu"
    fpga = "fpga"
    tpu = "tpu"


class InterfaceType(StrEnum):
    g4 = "4g"
    g5 = "5g"
    wifi = "wifi"
    bluetooth = "bluetooth"
    lora = "lora"
    zigbee = "zigbee"
    ethernet = "ethernet"


class InterfaceMode(StrEnum):
    infrastructure = "infrastructure"
    adhoc = "adhoc"


class EnergyUnit(StrEnum):
    wh = "wh"
    kwh = "kwh"
    Mwh = "Mwh"


class Co2Unit(StrEnum):
    kt_wh = "kt/wh"
    kt_kwh = "kt/kwh"
    kt_Mwh = "kt/Mwh"


class PowerUnit(StrEnum):
    w = "w"
    kw = "kw"
    Mw = "Mw"


class WattHour(StrEnum):
    wh = "wh"


class RenewableSource(StrEnum):
    solar_panel = "solar_panel"


class PowerMode(StrEnum):
    """mlsysops extension (seen in the reference node files): the kind of supply in a time window."""

    brown = "brown"
    green = "green"


# Values that are not in an enum but mean one of its members: {enum: {written: canonical}}.
# The loader applies these with a warning.
VALUE_ALIASES: dict[type[Enum], dict[str, str]] = {
    # The original Node CRD misspells lower_or_equal in its power relations.
    Relation: {"lower_or_qqual": "lower_or_equal"},
}
