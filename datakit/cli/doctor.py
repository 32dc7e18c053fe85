"""`datakit doctor`: versions, devices, working ONNX providers, and where models are looked for."""

from __future__ import annotations

from typing import Annotated

import typer

from datakit.cli.common import JsonOpt

# Option names that name a model, found on the other commands so the report lists them as they are.
_MODEL_WORDS = {"model", "tagger", "checkpoint", "ckpt", "vae", "lora", "hypernetwork"}


def _model_options(app: typer.Typer) -> list[dict]:
    """Every option of every datakit command that names a model (with its environment variable)."""
    found = []
    try:
        root = typer.main.get_command(app)
    except Exception:  # a broken command module must not break the doctor
        return found
    commands = getattr(root, "commands", {})
    stack = [(name, cmd) for name, cmd in commands.items()]
    while stack:
        name, cmd = stack.pop(0)
        if getattr(cmd, "commands", None):  # a group (typer carries its own click: no isinstance)
            stack.extend((f"{name} {sub}", c) for sub, c in cmd.commands.items())
            continue
        for param in cmd.params:
            if getattr(param, "param_type_name", None) != "option":
                continue
            long = max(param.opts, key=len)
            if _MODEL_WORDS & set(long.lstrip("-").split("-")):  # whole words: not --gradient-checkpointing
                envvar = param.envvar if isinstance(param.envvar, str) else None
                found.append({"command": name, "option": long, "envvar": envvar, "help": (param.help or "").strip()})
    return found


def register(app: typer.Typer) -> None:
    """Add the `doctor` command."""

    @app.command("doctor")
    def doctor(
        json_mode: JsonOpt = False,
        no_probe: Annotated[
            bool, typer.Option("--no-probe", help="Skip creating a test ONNX session per provider (faster).")
        ] = False,
    ) -> None:
        """Report versions, devices, working ONNX providers and where models are looked for."""
        import json

        from datakit.doctor import collect, format_report

        report = collect(probe=not no_probe, model_options=_model_options(app))
        if json_mode:
            typer.echo(json.dumps(report, ensure_ascii=False, default=str))
        else:
            typer.echo(format_report(report))
