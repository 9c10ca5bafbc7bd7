"""`mlsysops model list|describe|upload|train|promote|rollback|metrics`: the slice's model registry through
the northbound API (`/api/v1/models...`), in the style of the other client commands (tables by default,
`-o json|yaml`, errors on stderr with a non-zero exit code)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from mlsysops.cli.client_cmd import ApiOpt, Client, CtxOpt, OutOpt, Output, TokenOpt, _emit, _fail

TRAINING_STEPS = {"queued": 0, "running": 1, "succeeded": 2, "failed": 2}


def _wait_for_job(client: Client, name: str, job_id: str, timeout: float) -> None:
    """Poll the job until it ends (progress: queued -> training on N rows -> done); exit 1 unless it
    succeeded."""
    import time

    from mlsysops.cli.progress import Progress

    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {"status": "queued", "detail": {}}
    with Progress(f"training {name} (job {job_id})", total=2) as bar:
        while True:
            job = client.call("GET", f"/api/v1/models/{name}/jobs/{job_id}")
            status, detail = job.get("status"), job.get("detail") or {}
            note = f"training on {detail['rows']} rows" if status == "running" and "rows" in detail else status
            bar.update(done=TRAINING_STEPS.get(status, 0), note=note)
            if status in ("succeeded", "failed") or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    detail = job.get("detail") or {}
    if job.get("status") == "succeeded":
        typer.echo(f"job {job_id} succeeded: {name} v{job.get('version')} "
                   + ("promoted to production" if job.get("promoted") else "kept as a candidate")
                   + (f" ({detail['reason']})" if detail.get("reason") else ""))
        return
    if job.get("status") == "failed":
        raise _fail(f"job {job_id} failed: {detail.get('error') or 'no reason recorded'}")
    raise _fail(f"job {job_id} still {job.get('status')} after {timeout:.0f}s "
                f"(`mlsysops model describe {name}` shows it later)")


def _duration(text: str | None) -> float | None:
    if text is None:
        return None
    from mlsysops.agents.descriptions.quantities import parse_duration

    try:
        return float(parse_duration(text))
    except (TypeError, ValueError):
        raise _fail(f"--every: expected a duration like 30s, 10m, 1h; got {text!r}") from None


def _read_card(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise _fail(f"{path}: {exc.strerror}") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            card = yaml.safe_load(text)
        else:
            card = json.loads(text)
    except ValueError as exc:
        raise _fail(f"{path}: not valid {'YAML' if path.suffix in ('.yaml', '.yml') else 'JSON'}: {exc}") from None
    if not isinstance(card, dict):
        raise _fail(f"{path}: a model card is a JSON object")
    return card


def register(app: typer.Typer) -> None:
    model = typer.Typer(help="The slice's ML models: list, describe, upload (ONNX + card), train, promote, "
                             "roll back, metrics.", no_args_is_help=True)
    app.add_typer(model, name="model")

    @model.command("list")
    def model_list(output: OutOpt = Output.table, api: ApiOpt = None, token: TokenOpt = None,
                   context: CtxOpt = None) -> None:
        """Every model with its production and latest version."""
        rows = Client(api, token, context).call("GET", "/api/v1/models")
        _emit(rows, output, [("NAME", "name"), ("PRODUCTION", "production"), ("LATEST", "latest"),
                             ("VERSIONS", "versions"), ("FORMAT", "format"), ("OUTPUT", "output"),
                             ("UPDATED", "updated")], [("INPUTS", "inputs")])

    @model.command("describe")
    def model_describe(name: str, output: OutOpt = Output.table, api: ApiOpt = None, token: TokenOpt = None,
                       context: CtxOpt = None) -> None:
        """One model: versions (stage, sha256, card), history of promotions, recent training jobs."""
        data = Client(api, token, context).call("GET", f"/api/v1/models/{name}")
        if output is not Output.table:
            _emit(data, output, [])
            return
        rows = [{**v, "metrics": v["card"].get("metrics"), "sha": v["sha256"][:12]} for v in data["version_list"]]
        _emit(rows, output, [("VERSION", "version"), ("STAGE", "stage"), ("FORMAT", "format"), ("SOURCE", "source"),
                             ("SIZE", "size"), ("SHA256", "sha"), ("METRICS", "metrics"), ("CREATED", "created")],
              title=f"{name}: inputs {', '.join(data['inputs'])} -> {data['output']}")
        _emit(data["history"][:10], output, [("WHEN", "ts"), ("ACTION", "action"), ("VERSION", "version"),
                                             ("PREVIOUS", "previous"), ("REASON", "reason")], title="history")
        if data.get("schedule"):
            typer.echo(f"retrained every {data['schedule']['every']:g}s ({data['schedule']['trainer']})")

    @model.command("upload")
    def model_upload(name: str, file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="artifact")],
                     card: Annotated[Path, typer.Option("--card", exists=True, dir_okay=False,
                                                        help="model card (JSON/YAML; ours or the original's)")],
                     fmt: Annotated[str, typer.Option("--format", help="artifact format")] = "onnx",
                     promote: Annotated[bool, typer.Option("--promote", help="serve it at once")] = False,
                     api: ApiOpt = None, token: TokenOpt = None, context: CtxOpt = None) -> None:
        """Add a version from an artifact (e.g. model.onnx) and its card; checked before it is stored."""
        body = {"format": fmt, "card": _read_card(card), "promote": promote,
                "artifact": base64.b64encode(file.read_bytes()).decode()}
        out = Client(api, token, context).call("POST", f"/api/v1/models/{name}/versions", json=body)
        typer.echo(f"model {name} v{out['version']} uploaded ({out['stage']}, sha256 {out['sha256'][:12]})")

    @model.command("train")
    def model_train(name: Annotated[str, typer.Argument(help="The model")],
                    seed: Annotated[int, typer.Option(help="Random seed: the same data and seed give the same "
                                                           "artifact")] = 0,
                    trainer: Annotated[str | None, typer.Option(help="default: the model's own")] = None,
                    every: Annotated[str | None, typer.Option(help="also retrain on this schedule, e.g. 10m")] = None,
                    wait: Annotated[bool, typer.Option("--wait", help="Wait for the job to finish, with "
                                                                      "progress")] = False,
                    timeout: Annotated[float, typer.Option(help="--wait: give up after this many seconds")] = 600.0,
                    api: ApiOpt = None, token: TokenOpt = None, context: CtxOpt = None) -> None:
        """Start a training job on the slice's recorded telemetry (promoted only if it beats production)."""
        body = {"seed": seed, "trainer": trainer, "every": _duration(every)}
        client = Client(api, token, context)
        out = client.call("POST", f"/api/v1/models/{name}/train", json=body)
        typer.echo(f"training job {out['id']} for {name} {out['status']} (trainer {out['trainer']}, seed {out['seed']})"
                   + (f"; retrained every {every}" if every else ""))
        if wait:
            _wait_for_job(client, name, out["id"], timeout)

    @model.command("promote")
    def model_promote(name: Annotated[str, typer.Argument(help="The model")],
                      version: Annotated[int, typer.Argument(help="The version to serve")],
                      reason: Annotated[str, typer.Option(help="Kept in the model's history")] = "operator",
                      api: ApiOpt = None,
                      token: TokenOpt = None, context: CtxOpt = None) -> None:
        """Make a version the one agents are served."""
        out = Client(api, token, context).call("POST", f"/api/v1/models/{name}/promote",
                                               json={"version": version, "reason": reason})
        typer.echo(f"model {name} v{out['version']} is in production")

    @model.command("rollback")
    def model_rollback(name: Annotated[str, typer.Argument(help="The model")],
                       reason: Annotated[str, typer.Option(help="Kept in the model's history")] = "operator",
                       api: ApiOpt = None, token: TokenOpt = None,
                       context: CtxOpt = None) -> None:
        """Undo the last promotion: the version it replaced serves again."""
        out = Client(api, token, context).call("POST", f"/api/v1/models/{name}/rollback", json={"reason": reason})
        typer.echo(f"model {name} rolled back to v{out['version']}")

    @model.command("metrics")
    def model_metrics(name: str, output: OutOpt = Output.table, api: ApiOpt = None, token: TokenOpt = None,
                      context: CtxOpt = None) -> None:
        """Per version: held-out metrics from training and the live error of reported outcomes."""
        rows = Client(api, token, context).call("GET", f"/api/v1/models/{name}/metrics")
        _emit(rows, output, [("VERSION", "version"), ("STAGE", "stage"), ("SOURCE", "source"),
                             ("TRAINING", "training"), ("OBSERVED", "live.observations"), ("LIVE MAE", "live.mae"),
                             ("LIVE RMSE", "live.rmse")])
