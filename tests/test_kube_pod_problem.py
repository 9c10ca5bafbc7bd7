"""Why an instance on Kubernetes is not running, read from its newest pod as the API server reports it
(mechanisms/kube_placement.py: pod_problem): failures show at once, not after the 10-minute progress deadline."""

from __future__ import annotations

from typing import Any

from mlsysops.mechanisms.kube_placement import pod_problem


def pod(created: str, phase: str = "Pending", *, waiting: dict[str, str] | None = None,
        conditions: list[dict[str, str]] | None = None, **status: Any) -> dict[str, Any]:
    st: dict[str, Any] = {"phase": phase, **status}
    if waiting is not None:
        st["containerStatuses"] = [{"name": "main", "ready": False, "state": {"waiting": waiting}}]
    if conditions is not None:
        st["conditions"] = conditions
    return {"metadata": {"name": f"p-{created}", "creationTimestamp": created}, "status": st}


def test_image_and_crash_backoffs_fail_with_the_kubelet_message() -> None:
    pulled = pod("2026-11-27T08:00:00Z", waiting={"reason": "ImagePullBackOff",
                                                  "message": 'Back-off pulling image "registry.example.org/x:1"'})
    assert pod_problem([pulled]) == ("failed", 'ImagePullBackOff: Back-off pulling image "registry.example.org/x:1"')
    crash = pod("2026-11-27T08:00:00Z", "Running", waiting={"reason": "CrashLoopBackOff"})
    assert pod_problem([crash]) == ("failed", "CrashLoopBackOff")


def test_failed_phase_and_unschedulable() -> None:
    rejected = pod("2026-11-27T08:00:00Z", "Failed", reason="OutOfcpu", message="Pod Node didn't have enough cpu")
    assert pod_problem([rejected]) == ("failed", "OutOfcpu: Pod Node didn't have enough cpu")
    pending = pod("2026-11-27T08:00:00Z", conditions=[{"type": "PodScheduled", "status": "False",
                                                       "reason": "Unschedulable",
                                                       "message": "0/3 nodes are available: 3 Insufficient cpu."}])
    assert pod_problem([pending]) == ("starting", "Unschedulable: 0/3 nodes are available: 3 Insufficient cpu.")


def test_on_its_way_or_replaced_is_no_problem() -> None:
    assert pod_problem([]) is None
    assert pod_problem([pod("2026-11-27T08:00:00Z", waiting={"reason": "ContainerCreating"})]) is None
    old_failed = pod("2026-11-27T08:00:00Z", "Failed", reason="Evicted")
    new_running = pod("2026-11-27T08:05:00Z", "Running")
    assert pod_problem([old_failed, new_running]) is None      # the newest pod decides
