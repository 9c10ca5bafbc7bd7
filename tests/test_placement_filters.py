"""Each placement filter accepts the right nodes and rejects with the documented reason."""

from __future__ import annotations

import pytest

from mlsysops.policies.placement_filters import (
    DEFAULT_FILTERS,
    applicable_filters,
    filter_alive,
    filter_architecture,
    filter_cpu,
    filter_gpu,
    filter_labels,
    filter_layer,
    filter_memory,
    filter_mobility,
    filter_pinned,
    filter_sensors,
    run_filters,
)
from tests.support import component_request as req
from tests.support import node_view as node

MI = 1 << 20


def test_alive() -> None:
    assert filter_alive(req(), node()).ok
    res = filter_alive(req(), node(alive=False))
    assert not res.ok and res.reason == "node down"


def test_pinned() -> None:
    assert filter_pinned(req(), node("node-1")).ok
    assert filter_pinned(req(node="node-1"), node("node-1")).ok
    res = filter_pinned(req(node="node-3"), node("node-1"))
    assert not res.ok and res.reason == "pinned to node-3"


def test_layer() -> None:
    assert filter_layer(req(), node(layer="edge")).ok
    assert filter_layer(req(layers={"*"}), node(layer="edge")).ok
    assert filter_layer(req(layers={"edge", "cloud"}), node(layer="edge")).ok
    res = filter_layer(req(layers={"cloud"}), node(layer="edge"))
    assert not res.ok and res.reason == "layer edge not in [cloud]"


def test_labels_key_value_and_bare_key() -> None:
    n = node(labels={"node-type:rpi", "zone:a"})
    assert filter_labels(req(labels=["node-type:rpi"]), n).ok
    assert filter_labels(req(labels=["zone"]), n).ok
    res = filter_labels(req(labels=["node-type:jetson", "zone"]), n)
    assert not res.ok and res.reason == "missing label node-type:jetson"
    res = filter_labels(req(labels=["node-type:rpi"]), node(labels={"node-type"}))
    assert not res.ok and "missing label node-type:rpi" == res.reason


def test_mobility() -> None:
    assert filter_mobility(req(mobile=None), node(mobile=True)).ok
    assert filter_mobility(req(mobile=True), node(mobile=True)).ok
    res = filter_mobility(req(mobile=True), node(mobile=False))
    assert not res.ok and res.reason == "not mobile"
    res = filter_mobility(req(mobile=False), node(mobile=True))
    assert not res.ok and res.reason == "node is mobile"


def test_sensors_type_and_model() -> None:
    n = node(sensors={"camera:d455", "temperature"})
    assert "camera" in n.sensors  # bare type derived from the model entry
    assert filter_sensors(req(sensors=["camera"]), n).ok
    assert filter_sensors(req(sensors=["camera:d455", "temperature"]), n).ok
    res = filter_sensors(req(sensors=["camera:d435"]), n)
    assert not res.ok and res.reason == "no sensor camera:d435"
    res = filter_sensors(req(sensors=["camera:d455"]), node(sensors={"camera"}))
    assert not res.ok and res.reason == "no sensor camera:d455"


def test_architecture() -> None:
    assert filter_architecture(req(), node(architecture="arm64")).ok
    assert filter_architecture(req(architectures={"arm64", "amd64"}), node(architecture="arm64")).ok
    res = filter_architecture(req(architectures={"amd64"}), node(architecture="arm64"))
    assert not res.ok and res.reason == "architecture arm64 not in [amd64]"


def test_gpu() -> None:
    assert filter_gpu(req(gpu=False), node(gpu=False)).ok
    assert filter_gpu(req(gpu=True), node(gpu=True)).ok
    res = filter_gpu(req(gpu=True), node(gpu=False))
    assert not res.ok and res.reason == "no gpu"


def test_cpu_fit() -> None:
    assert filter_cpu(req(cpu_cores=1.0), node(cpu_capacity=2.0, cpu_allocated=1.0)).ok
    # Summed millicores must not fail on float noise.
    assert filter_cpu(req(cpu_cores=0.3), node(cpu_capacity=1.0, cpu_allocated=0.1 + 0.6)).ok
    res = filter_cpu(req(cpu_cores=0.5), node(cpu_capacity=1.0, cpu_allocated=0.8))
    assert not res.ok and res.reason == "insufficient cpu: requests 0.5, free 0.2"


def test_memory_fit() -> None:
    full = node(memory_capacity=128 * MI, memory_allocated=64 * MI)
    assert filter_memory(req(memory_bytes=64 * MI), full).ok
    res = filter_memory(req(memory_bytes=64 * MI), node(memory_capacity=128 * MI, memory_allocated=96 * MI))
    assert not res.ok and res.reason == "insufficient memory: requests 64Mi, free 32Mi"


def test_run_filters_collects_all_reasons_in_order() -> None:
    r = req(layers={"cloud"}, sensors=["camera"], gpu=True)
    reasons = run_filters(r, node(layer="edge", alive=False))
    assert reasons == ["node down", "layer edge not in [cloud]", "no sensor camera", "no gpu"]
    assert run_filters(r, node(layer="cloud", sensors={"camera"}, gpu=True)) == []


def test_unschedulable_node_says_why() -> None:
    """Up (its agent runs) but Kubernetes will not take new pods there: filtered with Kubernetes' reason."""
    assert run_filters(req(), node(unschedulable="Kubernetes: node cordoned (unschedulable)")) == [
        "Kubernetes: node cordoned (unschedulable)"]
    assert run_filters(req(), node()) == []


def test_only_relevant_filters_apply() -> None:
    # service_slots too: a device's slots bound every request, whatever it asks for
    assert [f.name for f in DEFAULT_FILTERS if f.prepare(req()) is not None] == ["alive", "schedulable",
                                                                                  "service_slots"]
    assert len(applicable_filters(req())) == 3
    full = req(node="n", layers={"edge"}, labels=["a"], mobile=False, sensors=["s"], architectures={"amd64"},
               gpu=True, cpu_cores=1, memory_bytes=1)
    assert len(applicable_filters(full)) == len(DEFAULT_FILTERS)


@pytest.mark.parametrize("value", [0.0, 0.25])
def test_zero_request_always_fits(value: float) -> None:
    assert run_filters(req(cpu_cores=0.0), node(cpu_capacity=value, cpu_allocated=value)) == []


def test_a_device_takes_as_many_services_as_it_has_slots() -> None:
    device = node(labels={"service-slots:1", "gateway:gw"}, cpu_capacity=0.0, memory_capacity=0)
    assert run_filters(req(cpu_cores=0.5, memory_bytes=2**20), device) == []   # slots, not cores, are its capacity
    full = node(labels={"service-slots:1"}, hosted={("other", "svc"): 1})
    assert run_filters(req(), full) == ["all 1 service slots of the device are taken"]
