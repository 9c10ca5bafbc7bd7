"""Slice config `devices:` (simulated devices behind gateway nodes, their MQTT broker): validation of bad
configs (file, field path, what was expected), the embedded broker's start/stop (a real mosquitto), and the
clear errors of a start that cannot succeed, with no broker process or workdir left behind."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from mlsysops.agents.descriptions import DescriptionError
from mlsysops.agents.slice_config import load_slice
from mlsysops.cli.device_runtime import DeviceRuntime
from mlsysops.cli.slice_assembly import SubstrateError
from mlsysops.substrates.mqtt import broker as mqtt_broker
from mlsysops.substrates.mqtt.broker import BrokerStartError, MosquittoBroker
from tests.support import child_processes

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "slices" / "devices.yaml"


def slice_file(tmp_path: Path, devices: object, **top: object) -> Path:
    """The example slice with its `devices` section replaced (descriptions referenced from the examples)."""
    cfg = yaml.safe_load(EXAMPLE.read_text())
    base = EXAMPLE.parent
    cfg.update(continuum=str(base / cfg["continuum"]), clusters=[str(base / c) for c in cfg["clusters"]],
               nodes=[str(base / n) for n in cfg["nodes"]], devices=devices, **top)
    path = tmp_path / "slice.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def problems(path: Path) -> str:
    with pytest.raises(DescriptionError) as err:
        load_slice(path)
    return str(err.value)


def test_the_example_slice_has_two_devices_behind_one_node() -> None:
    spec = load_slice(EXAMPLE)
    devices = spec.config.devices
    assert devices is not None and devices.broker == "embedded" and devices.port == 0   # any free port
    [(gw, devs)] = devices.gateways.items()
    assert gw in spec.nodes and [d.name for d in devs] == ["mcu-a", "mcu-b"]
    assert devs[0].heartbeat_s == 1.0 and devs[0].freq_hz == [16e6, 64e6] and devs[1].slots == 2
    assert [s.type for s in devs[1].sensors] == ["temperature", "humidity"]
    assert load_slice(ROOT / "examples" / "slices" / "demo.yaml").config.devices is None   # off if omitted


def test_validate_summarises_the_devices() -> None:
    from typer.testing import CliRunner

    from mlsysops.cli.main import app

    result = CliRunner().invoke(app, ["validate", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert "7 nodes, 2 devices behind edge-rpi-1)" in result.output


def test_an_external_broker_defaults_to_port_1883(tmp_path: Path) -> None:
    spec = load_slice(slice_file(tmp_path, {"broker": "external", "host": "10.0.0.5",
                                            "gateways": {"edge-rpi-1": [{"name": "mcu-a"}]}}))
    assert (spec.config.devices.host, spec.config.devices.port) == ("10.0.0.5", 1883)
    dev = spec.config.devices.gateways["edge-rpi-1"][0]
    assert [s.type for s in dev.sensors] == ["temperature"] and dev.slots == 1   # the simulator's defaults


def test_a_gateway_that_is_not_a_node_of_the_slice_is_refused(tmp_path: Path) -> None:
    path = slice_file(tmp_path, {"gateways": {"edge-rpi1": [{"name": "mcu-a"}]}})
    text = problems(path)
    assert str(path) in text and "devices.gateways.edge-rpi1" in text, text
    assert "gateway 'edge-rpi1' is not a node of the slice" in text and "expected one of the slice's nodes" in text
    assert "did you mean 'edge-rpi-1'" in text, text


@pytest.mark.parametrize("devices, where", [
    ({"brokr": "embedded"}, "devices.brokr"),
    ({"gateways": {"edge-rpi-1": [{"name": "mcu-a", "slot": 2}]}}, "devices.gateways.edge-rpi-1[0].slot"),
    ({"gateways": {"edge-rpi-1": [{"name": "mcu-a", "sensors": [{"type": "lidar"}]}]}},
     "devices.gateways.edge-rpi-1[0].sensors[0].type"),
    ({"broker": "builtin"}, "devices.broker"),
    ({"gateways": {"edge-rpi-1": [{"name": "MCU_B"}]}}, "devices.gateways.edge-rpi-1[0].name"),   # no node name
])
def test_unknown_fields_and_bad_values_name_their_field(tmp_path: Path, devices: dict, where: str) -> None:
    path = slice_file(tmp_path, devices)
    text = problems(path)
    assert str(path) in text and where in text, text


def test_device_names_must_be_new_node_names_and_unique(tmp_path: Path) -> None:
    text = problems(slice_file(tmp_path, {"gateways": {
        "edge-rpi-1": [{"name": "edge-rpi-2"}, {"name": "mcu-a"}], "edge-rpi-2": [{"name": "mcu-a"}]}}))
    assert "devices.gateways.edge-rpi-1[0].name" in text and "has the name of a node of the slice" in text, text
    assert "devices.gateways.edge-rpi-2[0].name" in text and "also defined at devices.gateways.edge-rpi-1[1]" in text


def test_simulated_devices_need_node_agents_run_by_up(tmp_path: Path) -> None:
    kube = {"type": "kubernetes", "kubeconfig": "/nonexistent"}
    text = problems(slice_file(tmp_path, {"gateways": {"edge-rpi-1": [{"name": "mcu-a"}]}}, substrate=kube))
    assert "devices: simulated devices and an embedded broker need node agents run by `mlsysops up`" in text
    assert "kubernetes with simulate_nodes: true" in text, text
    # real gateways in their pods (`mlsysops agent node`) need only the broker's address
    real = slice_file(tmp_path, {"broker": "external", "host": "mqtt.example.org", "gateways": {"edge-rpi-1": []}},
                      substrate=kube)
    try:
        load_slice(real)
    except DescriptionError as exc:   # the kubeconfig may be refused; the devices section must not be
        assert "devices" not in str(exc), str(exc)


def test_the_embedded_broker_answers_mqtt_and_stop_leaves_nothing() -> None:
    broker = MosquittoBroker()
    broker.start()
    try:
        assert broker.alive and broker.pid in child_processes("mosquitto") and broker.workdir is not None
        workdir = broker.workdir
        assert broker._listening()   # an MQTT CONNACK, from this broker
    finally:
        broker.stop()
    assert not broker.alive and broker.pid not in child_processes("mosquitto") and not workdir.exists()


def test_no_mosquitto_binary_is_a_clear_error_naming_the_package(monkeypatch, tmp_path: Path) -> None:
    # mosquitto is installed here; its absence is made by hiding it from the lookup (PATH and sbin dirs)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(mqtt_broker, "SBIN_DIRS", (str(tmp_path),))
    with pytest.raises(BrokerStartError, match=r"`mosquitto` binary is missing .*apt-get install mosquitto"):
        MosquittoBroker().start()


@pytest.mark.asyncio(loop_scope="session")
async def test_a_runtime_whose_broker_cannot_start_says_why_and_leaves_no_process(monkeypatch, tmp_path) -> None:
    spec = load_slice(EXAMPLE)
    running = set(child_processes("mosquitto"))   # the session's broker of other tests may run beside
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(mqtt_broker, "SBIN_DIRS", (str(tmp_path),))
    with pytest.raises(SubstrateError, match="devices: the `mosquitto` binary is missing.*apt-get install mosquitto"):
        await DeviceRuntime(spec.config.devices).start_broker()
    monkeypatch.undo()

    with socket.socket() as busy:   # the configured port is taken: mosquitto exits, its log says why
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = spec.config.devices.model_copy(update={"port": port})
        before = set(Path("/tmp").glob(f"{mqtt_broker.WORKDIR_PREFIX}*"))
        with pytest.raises(SubstrateError, match=f"devices: mosquitto on 127.0.0.1:{port} exited with .*"
                                                 "Address already in use"):
            await DeviceRuntime(config).start_broker()
    assert set(child_processes("mosquitto")) <= running
    assert set(Path("/tmp").glob(f"{mqtt_broker.WORKDIR_PREFIX}*")) <= before   # its workdir is gone too
