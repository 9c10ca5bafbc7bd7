"""The `mlsysops` command: one Typer app; each command group lives in its own module.

Every module in COMMAND_MODULES exposes `register(app: typer.Typer) -> None`. Imports stay inside the
commands so `mlsysops validate` does not pay for importing SPADE.
"""

from __future__ import annotations

import importlib

import typer
from typer.core import TyperOption

COMMAND_MODULES = [
    "mlsysops.cli.validate_cmd",
    "mlsysops.cli.convert_cmd",
    "mlsysops.cli.up_cmd",
    "mlsysops.cli.agent_cmd",
    "mlsysops.cli.client_cmd",
    "mlsysops.cli.model_cmd",
    "mlsysops.cli.deploy_cmd",
    "mlsysops.cli.xmpp_cmd",
]

def _flag_type(self: TyperOption, ctx: object) -> str | None:
    # Typer prints a type for every option; a flag takes no value, so `--watch <bool>` reads as if it did
    if self.is_flag and self.metavar is None:
        return None
    return _option_type(self, ctx)


_option_type = TyperOption.display_type_rich
TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign]

app = typer.Typer(
    name="mlsysops",
    help="MLSysOps: autonomic, explainable management of the cloud/edge/far-edge continuum.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def main() -> None:
    import sys

    if sys.argv[1:3] == ["agent", "far-edge"]:
        # the far-edge agent has its own flags (no slice YAML on a board): `python -m mlsysops.far_edge`
        from mlsysops.far_edge.cli import main as far_edge_main

        raise SystemExit(far_edge_main(sys.argv[3:]))
    app()


if __name__ == "__main__":
    main()
