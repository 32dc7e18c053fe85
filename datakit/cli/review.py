"""`datakit review IN OUT`: look at every item in the browser, reject the bad ones, fix captions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from datakit.cli.common import ForceOpt, InDir, JsonOpt, OutDir, QuietOpt, execute


def register(app: typer.Typer) -> None:
    """Add the `review` command."""

    @app.command("review")
    def review(
        input_dir: InDir,
        out_dir: OutDir,
        accept_all: Annotated[bool, typer.Option("--accept-all", help="No browser: keep every item as it is (for scripts and Makefiles).")] = False,
        decisions: Annotated[Optional[Path], typer.Option("--decisions", metavar="FILE", help="No browser: apply a review.json from an earlier session (items it does not name are kept).", show_default=False)] = None,
        host: Annotated[str, typer.Option("--host", help="Address the page listens on (this machine only by default).")] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port of the page (0: any free port).")] = 0,
        open_browser: Annotated[bool, typer.Option("--open", help="Open the page in the default browser.")] = False,
        copy: Annotated[bool, typer.Option("--copy/--link", help="Copy kept images instead of hard-linking them.")] = False,
        force: ForceOpt = False,
        quiet: QuietOpt = False,
        json_mode: JsonOpt = False,
    ) -> None:
        """Review every item in a browser page (reject, fix captions), or apply decisions; write the kept ones to OUT."""

        def work(reporter):
            from datakit.stages.review import ReviewConfig, run_review

            cfg = ReviewConfig(input_dir=input_dir, out_dir=out_dir, accept_all=accept_all, decisions=decisions,
                               host=host, port=port, open_browser=open_browser, copy=copy, force=force)
            return run_review(cfg, reporter)

        execute(work, quiet=quiet, json_mode=json_mode)
