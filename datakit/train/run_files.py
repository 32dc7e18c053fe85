"""The files around a training run: its output name, where it may write, its fingerprint, its checkpoints' owner."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

from datakit.errors import UsageError
from datakit.train import data as D
from datakit.train.config import TrainConfig, config_record
from datakit.train.method import CHECKPOINTS, RunContext

RUN_MARKER = "run.json"  # in OUT/checkpoints: the fingerprint of the run the checkpoints belong to


def output_name(cfg: TrainConfig, trigger: str | None, default: str) -> str:
    """--output-name (refused when it is not a safe file name), else the trigger made safe, else the method's name."""
    from datakit.paths import check_name, safe_name

    if cfg.output_name is not None:
        return check_name(cfg.output_name, "--output-name")
    return safe_name(trigger.replace(" ", "_"), fallback=default) if trigger else default


def check_output_outside_input(out: Path, dataset: Path, spec: D.DatasetSpec) -> None:
    """No stage writes into its own input: OUT may not be the dataset folder, lie inside it, or inside an image folder."""
    from datakit.paths import is_inside

    root = Path(dataset)
    inputs = [s.image_dir for s in spec.subsets]
    clash = (is_inside(out, root) if root.is_dir() else Path(out).resolve() == root.resolve().parent)
    clash = clash or any(is_inside(out, folder) for folder in inputs)
    if clash:
        raise UsageError(f"--output {out} is the dataset or lies inside it ({dataset}); training writes its files, "
                         "checkpoints and datakit.json there. Give another folder")


def prepare_output(out: Path) -> None:
    """Create the output folder, or one clear usage error when it cannot be created or written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the output folder {out}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK):
        raise UsageError(f"the output folder is not writable: {out}")


def run_fingerprint(cfg: TrainConfig, spec: D.DatasetSpec, entries: list[D.Entry], extra=None) -> str:
    """Config (minus what cannot change the result) + every image and caption byte: same -> nothing to do."""
    from datakit.manifest import hash_file, hash_json

    conf = {k: v for k, v in config_record(cfg).items() if k not in ("device", "dry_run", "resume", "cache_dir")}
    files = []
    for e in entries:
        files.append(hash_file(e.path))
        for ext in (".txt", ".caption"):
            cap = e.path.with_suffix(ext)
            if cap.is_file():
                files.append(hash_file(cap))
    return hash_json({"config": conf, "files": files, "subsets": [str(asdict(s)) for s in spec.subsets], "extra": extra})


def checkpoints_belong_to(run: RunContext) -> bool:
    """True when OUT/checkpoints was written by this very run (same fingerprint): an interrupted run to continue."""
    try:
        return json.loads((run.out / CHECKPOINTS / RUN_MARKER).read_text()).get("fingerprint") == run.fingerprint
    except (OSError, ValueError, AttributeError):
        return False


def mark_checkpoints(run: RunContext) -> None:
    """Record which run the checkpoints in OUT belong to, so a plain re-run after an interruption continues it."""
    from datakit.imageio import write_text_atomic

    write_text_atomic(run.out / CHECKPOINTS / RUN_MARKER,
                      json.dumps({"fingerprint": run.fingerprint, "method": run.settings.get("method")}) + "\n")
