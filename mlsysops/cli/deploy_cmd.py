"""`mlsysops deploy render|apply`: run a slice on Kubernetes (manifests from agents/deploy/render.py).

``render SLICE -o -`` writes one multi-document YAML to stdout (the default); ``-o DIR`` writes one file
per kind (``00-namespace.yaml``, ``01-customresourcedefinition.yaml``, ...) in apply order. ``apply``
renders and server-side applies each object (field manager ``mlsysops``), CRDs first, waiting until they
are Established; secrets a previous apply generated are reused, so re-applying never rotates passwords
under running agents. Exit status 1 when any object failed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

SliceArg = Annotated[Path, typer.Argument(help="Slice config YAML", exists=True, dir_okay=False)]
ImageOpt = Annotated[str | None, typer.Option("--image", help="Agent image (default mlsysops:<version>)")]
NsOpt = Annotated[str | None, typer.Option("--namespace", "-n", help="Namespace (default mlsysops-<slice>)")]
SimOpt = Annotated[str | None, typer.Option("--sim", help="Keep the simulated substrate: simulator URL")]
WlOpt = Annotated[str | None, typer.Option("--workload-namespace", help="Namespace of app components "
                                                                       "(default <namespace>-apps)")]


def _render(slice_path: Path, image: str | None, namespace: str | None, sim: str | None,
            workload_ns: str | None, secrets: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    from mlsysops.agents.descriptions import DescriptionError
    from mlsysops.agents.slice_config import load_slice
    from mlsysops.cli.deploy import DEFAULT_IMAGE, render

    try:
        spec = load_slice(slice_path)
    except DescriptionError as exc:
        typer.echo(f"invalid slice {slice_path}:\n{exc}", err=True)
        raise typer.Exit(1) from None
    return render(spec, image=image or DEFAULT_IMAGE, namespace=namespace, workload_namespace=workload_ns,
                  sim_url=sim, **(secrets or {}))


def _dump(objects: list[dict[str, Any]]) -> str:
    import yaml

    return yaml.safe_dump_all(objects, sort_keys=False)


def write_rendered(objects: list[dict[str, Any]], out: str) -> list[Path]:
    """Write to stdout (`-`) or one file per kind in directory `out` (numbered in apply order)."""
    if out == "-":
        typer.echo(_dump(objects), nl=False)
        return []
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)
    paths = []
    for i, (kind, objs) in enumerate(by_kind.items()):
        path = directory / f"{i:02d}-{kind.lower()}.yaml"
        path.write_text(_dump(objs), encoding="utf-8")
        paths.append(path)
    return paths


async def _apply(slice_path: Path, image: str | None, namespace: str | None, sim: str | None,
                 workload_ns: str | None, kubeconfig: Path | None, context: str | None, dry_run: bool) -> int:
    from mlsysops.cli.deploy.apply import ApplyResult, apply_manifests, existing_secrets
    from mlsysops.cli.progress import Progress
    from mlsysops.substrates.kubernetes.client import KubeError, connect

    try:
        api = await connect(str(kubeconfig) if kubeconfig else None, context)
    except Exception as exc:   # noqa: BLE001 - any config problem: say which, exit 1
        typer.echo(f"cannot load kubeconfig: {exc}", err=True)
        return 1
    async with api:
        objects = _render(slice_path, image, namespace, sim, workload_ns)
        ns = next(o["metadata"]["namespace"] for o in objects
                  if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "mlsysops-slice")
        try:
            kept = await existing_secrets(api, ns)
        except KubeError as exc:
            typer.echo(f"cannot reach the API server: {exc}", err=True)
            return 1
        if kept.get("passwords") or kept.get("api_token"):
            objects = _render(slice_path, image, namespace, sim, workload_ns, kept)
        with Progress(f"{'validating' if dry_run else 'applying'} {len(objects)} objects in {ns}",
                      total=len(objects)) as bar:
            def done(r: ApplyResult) -> None:
                bar.advance(note=f"{r.ref} {r.outcome}")
            results = await apply_manifests(api, objects, dry_run=dry_run, on_result=done)
    width = max(len(r.ref) for r in results)
    for r in results:
        line = f"{r.ref:<{width}}  {r.outcome}{': ' + r.detail if r.detail else ''}"
        typer.echo(line, err=r.outcome == "failed")
    counts: dict[str, int] = {}
    for r in results:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
    typer.echo(f"{len(results)} objects{' (dry run)' if dry_run else ''}: {summary}")
    return 1 if counts.get("failed") else 0


def register(app: typer.Typer) -> None:
    deploy = typer.Typer(help="Run a slice on Kubernetes: render or apply its manifests.", no_args_is_help=True)
    app.add_typer(deploy, name="deploy")

    @deploy.command("render")
    def render_cmd(
        slice_path: SliceArg,
        out: Annotated[str, typer.Option("--out", "-o", help="'-' for stdout, or a directory")] = "-",
        image: ImageOpt = None, namespace: NsOpt = None, sim: SimOpt = None, workload_namespace: WlOpt = None,
    ) -> None:
        """Write the manifests that run SLICE on Kubernetes (secrets are generated afresh)."""
        paths = write_rendered(_render(slice_path, image, namespace, sim, workload_namespace), out)
        for path in paths:
            typer.echo(f"wrote {path}")

    @deploy.command("apply")
    def apply_cmd(
        slice_path: SliceArg,
        kubeconfig: Annotated[Path | None, typer.Option("--kubeconfig", help="Kubeconfig (default: "
                                                        "$KUBECONFIG or ~/.kube/config)")] = None,
        context: Annotated[str | None, typer.Option("--context", help="Kubeconfig context")] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Server-side dry run (nothing persisted)")] = False,
        image: ImageOpt = None, namespace: NsOpt = None, sim: SimOpt = None, workload_namespace: WlOpt = None,
    ) -> None:
        """Server-side apply SLICE's manifests (field manager mlsysops), CRDs first."""
        raise typer.Exit(asyncio.run(_apply(slice_path, image, namespace, sim, workload_namespace, kubeconfig,
                                            context, dry_run)))
