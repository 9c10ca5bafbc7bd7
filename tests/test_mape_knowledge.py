"""Knowledge windows, stats and the Telemetry view."""

import time

import pytest

from mlsysops.agents.mape.knowledge import Knowledge, Telemetry, label_key


def test_window_is_bounded_by_length_and_keeps_newest() -> None:
    k = Knowledge(window_size=3, max_age=None)
    for i in range(5):
        k.record("cpu", i, {"node": "n1"}, ts=100 + i)
    assert k.window("cpu", {"node": "n1"}) == [(102, 2.0), (103, 3.0), (104, 4.0)]


def test_window_is_bounded_by_age() -> None:
    k = Knowledge(window_size=100, max_age=10)
    now = time.time()
    k.record("cpu", 1, ts=now - 60)
    k.record("cpu", 2, ts=now - 5)
    k.record("cpu", 3, ts=now)
    assert [v for _, v in k.window("cpu")] == [2.0, 3.0]
    assert k.window("cpu", since=now - 1) == [(now, 3.0)]


def test_series_are_separated_by_labels_and_latest_filters_by_subset() -> None:
    k = Knowledge(max_age=None)
    k.record("cpu", 0.5, {"node": "n1", "cluster": "c1"}, ts=10)
    k.record("cpu", 0.9, {"node": "n2", "cluster": "c1"}, ts=11)
    k.record("cpu", 0.7, {"node": "n1", "cluster": "c1"}, ts=12)
    assert set(k.series("cpu")) == {
        label_key({"node": "n1", "cluster": "c1"}),
        label_key({"node": "n2", "cluster": "c1"}),
    }
    assert k.latest("cpu") == 0.7
    assert k.latest("cpu", node="n2") == 0.9
    assert k.latest("cpu", cluster="c1", node="n1") == 0.7
    assert k.latest("cpu", node="n3") is None
    assert k.latest("missing") is None
    # exact labels are needed for window(); a subset is a different series
    assert k.window("cpu", {"node": "n1"}) == []


def test_stats_over_window_and_recent_seconds() -> None:
    k = Knowledge(max_age=None)
    now = time.time()
    for i, v in enumerate([4.0, 1.0, 7.0, 2.0]):
        k.record("lat", v, ts=now - 30 + i * 10)  # -30, -20, -10, 0
    s = k.stats("lat")
    assert s is not None
    assert (s.count, s.min, s.max, s.mean, s.last) == (4, 1.0, 7.0, 3.5, 2.0)
    recent = k.stats("lat", last_seconds=15)
    assert recent is not None and (recent.count, recent.min, recent.max) == (2, 2.0, 7.0)
    assert k.stats("nothing") is None


def test_forget_series_and_events_are_bounded() -> None:
    k = Knowledge(max_age=None, max_events=2)
    k.record("cpu", 1, {"node": "n1"})
    k.record("cpu", 2, {"node": "n2"})
    k.forget_series("cpu", {"node": "n1"})
    assert k.latest("cpu", node="n1") is None and k.latest("cpu", node="n2") == 2
    for i in range(3):
        k.add_event("node.lost", node=f"n{i}")
    assert [e.data["node"] for e in k.recent_events()] == ["n1", "n2"]
    assert k.recent_events("other") == []


def test_telemetry_view_acts_like_a_dict_of_latest_values() -> None:
    k = Knowledge(max_age=None)
    t = Telemetry(k)
    k.record("cpu", 0.25, {"node": "n1"}, ts=1)
    k.record("mem", 100, ts=2)
    assert dict(t) == {"cpu": 0.25, "mem": 100.0}
    assert t["cpu"] == 0.25 and t.get("absent") is None and len(t) == 2 and "mem" in t
    with pytest.raises(KeyError):
        t["absent"]
    assert t.labels("cpu") == [{"node": "n1"}]
    assert t.snapshot(["cpu", "absent"]) == {"cpu": 0.25}
    stats = t.stats("cpu", {"node": "n1"})
    assert stats is not None and stats.to_dict()["last"] == 0.25


def test_invalid_window_size() -> None:
    with pytest.raises(ValueError):
        Knowledge(window_size=0)
