"""The `datakit` command: one subcommand per stage."""

from __future__ import annotations

import importlib
import sys

import typer

try:  # typer >= 0.24 carries its own copy of click: its exceptions are not the `click` package's
    from typer._click import exceptions as click_errors
    from typer.exceptions import Abort, Exit
except ImportError:  # pragma: no cover - older typer on plain click
    from click import exceptions as click_errors
    from click.exceptions import Abort, Exit

from datakit import __version__
from datakit.errors import EXIT_INTERRUPTED, EXIT_USAGE

app = typer.Typer(
    name="datakit",
    help="Dataset preparation and augmentation for Stable Diffusion adapters (LoRA, hypernetworks).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# Each module defines `register(app)`; they import only typer at import time so `--help` stays instant.
COMMAND_MODULES = ["cutout", "backgrounds", "composite", "tag", "tags", "review", "emit", "train", "eval", "doctor"]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"datakit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Dataset preparation and augmentation for Stable Diffusion adapters (LoRA, hypernetworks)."""


# A missing command module is an ImportError here, on purpose: a deleted command must not vanish quietly.
for _name in COMMAND_MODULES:
    importlib.import_module(f"datakit.cli.{_name}").register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point: usage errors become one `error:` line and exit 2."""
    command = typer.main.get_command(app)
    try:
        rc = command.main(args=argv, prog_name="datakit", standalone_mode=False)
    except click_errors.NoArgsIsHelpError as exc:  # bare `datakit` or `datakit tags`
        typer.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        sys.exit(EXIT_USAGE)
    except click_errors.UsageError as exc:
        hint = f" (see 'datakit {exc.ctx.command_path.split(' ', 1)[1]} --help')" if exc.ctx and " " in exc.ctx.command_path else " (see 'datakit --help')"
        sys.stderr.write(f"error: {exc.format_message()}{hint}\n")
        sys.exit(EXIT_USAGE)
    except Exit as exc:
        sys.exit(exc.exit_code)
    except Abort:
        sys.stderr.write("error: interrupted\n")
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
