"""Thin Typer commands: parse options, build a config, call a stage, report."""
