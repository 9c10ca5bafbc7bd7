"""Our generated CRDs replace the original MLSysOps CRDs in a cluster that already holds original CRs
(fields at the object's root, no `spec`), on the real kube-apiserver: the objects keep every field, our
loader reads them, and objects in our `spec` form live beside them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from kubernetes.aio import client as k

from mlsysops.agents.descriptions import load_file, load_obj, to_dict
from mlsysops.substrates.kubernetes.crds import GROUP, VERSION, install_crds

aio = pytest.mark.asyncio(loop_scope="session")
REFERENCE = Path(__file__).resolve().parents[1] / "fixtures" / "reference"
ORIGINAL_CRDS = Path("/work/shared/reference/crds")
PLURALS = {"MLSysOpsApp": "mlsysopsapps", "MLSysOpsNode": "mlsysopsnodes", "MLSysOpsCluster": "mlsysopsclusters",
           "MLSysOpsContinuum": "mlsysopscontinuums"}


def root_form(path: Path) -> dict:
    """A reference description as the original framework stored it in Kubernetes: fields at the root. The
    body is the one our loader reads from the file (the raw files break the original CRD's own schema in
    places, e.g. `restart_policy: on_failure`, which the original apiserver refuses)."""
    doc = load_file(path)[0]
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": doc.kind, "metadata": {"name": doc.name},
            **to_dict(doc.spec)}


async def _apply_original_crds(api: k.ApiClient) -> None:
    ext = k.ApiextensionsV1Api(api)
    for path in sorted(ORIGINAL_CRDS.glob("*.yaml")):
        if "Datacenter" in path.name:
            continue
        crd = yaml.safe_load(path.read_text())
        try:
            current = await ext.read_custom_resource_definition(crd["metadata"]["name"])
            crd["metadata"]["resourceVersion"] = current.metadata.resource_version
            await ext.replace_custom_resource_definition(crd["metadata"]["name"], crd)
        except k.ApiException as exc:
            if exc.status != 404:
                raise
            await ext.create_custom_resource_definition(crd)


async def _create(api: k.ApiClient, ns: str, obj: dict) -> dict:
    plural = PLURALS[obj["kind"]]
    crs = k.CustomObjectsApi(api)
    for _ in range(100):   # a CRD just replaced may need a moment before its schema serves
        try:
            return await crs.create_namespaced_custom_object(GROUP, VERSION, ns, plural, obj)
        except k.ApiException as exc:
            if exc.status != 404:
                raise
            await asyncio.sleep(0.1)
    raise AssertionError(f"{plural} never served")


@aio
async def test_our_crds_admit_original_root_field_crs(kube_client, kube_ns) -> None:
    if not ORIGINAL_CRDS.is_dir():
        pytest.skip(f"the original CRDs are not at {ORIGINAL_CRDS}")
    crs = k.CustomObjectsApi(kube_client)
    try:
        # a cluster that runs the original framework: its CRDs and CRs with fields at the root
        await _apply_original_crds(kube_client)
        originals = [await _create(kube_client, kube_ns, root_form(REFERENCE / f))
                     for f in ("app.yaml", "cluster.yaml", "node1.yaml", "node2.yaml")]
        # ours replace them in place
        await install_crds(kube_client)
        for before in originals:
            plural, name = PLURALS[before["kind"]], before["metadata"]["name"]
            stored = await crs.get_namespaced_custom_object(GROUP, VERSION, kube_ns, plural, name)
            fields = [key for key in before if key not in ("apiVersion", "kind", "metadata")]
            assert fields and {key: stored[key] for key in fields} == {key: before[key] for key in fields}
            doc = load_obj(stored, source=f"{plural}/{name}")
            assert doc.form == "root" and doc.name == name

        # a new original CR is still admitted under our CRDs, fields unpruned, and our spec form beside it
        cont = root_form(REFERENCE / "continuum.yaml")
        stored = await _create(kube_client, kube_ns, cont)
        assert stored["clusters"] == cont["clusters"] and "spec" not in stored
        ours = load_obj(stored).kubernetes_form
        ours["metadata"]["name"] = ours["spec"]["continuum_id"] = "converted"
        stored = await _create(kube_client, kube_ns, ours)
        assert stored["spec"]["clusters"] == cont["clusters"]
        assert load_obj(stored).form == "kubernetes"
    finally:
        await install_crds(kube_client)   # later tests get our CRDs, whatever happened here
