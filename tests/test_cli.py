"""The `datakit` command line: help everywhere, instant --help, error lines, exit codes, --quiet/--json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Annotated

import pytest
import typer
from PIL import Image

from datakit import errors
from datakit.cli.common import ForceOpt, InDir, JsonOpt, OutDir, QuietOpt, SeedOpt, WorkersOpt, execute, resolve_workers
from datakit.cli.main import COMMAND_MODULES, app
from datakit.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_MISSING,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_RUNTIME,
    EXIT_USAGE,
)

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "onnxruntime", "diffusers", "transformers", "rembg", "pymatting", "numba", "accelerate", "peft")


def _registered() -> dict:
    """Top-level command name -> click command, as `datakit` sees them."""
    import typer

    return dict(typer.main.get_command(app).commands)


def _run(args: list[str], *, code: str | None = None, env: dict | None = None, cwd: Path | None = None):
    """Run `python -m datakit ARGS` (or a script) in a fresh process."""
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "datakit", *args]
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.setdefault("COLUMNS", "120")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=full_env, cwd=cwd or ROOT)


class _Proc:
    """What a command did: returncode, stdout, stderr (like subprocess.CompletedProcess)."""

    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def datakit_main(capsys, monkeypatch):
    """datakit_main(*argv): run the real entry point in-process -> (returncode, stdout, stderr)."""
    from datakit.cli.main import main

    monkeypatch.setenv("COLUMNS", "120")

    def call(*argv):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main(list(argv))
        out = capsys.readouterr()
        return _Proc(exc.value.code, out.out, out.err)

    return call


def _assert_one_error_line(proc, code: int, *fragments: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for f in fragments:
        assert f in errors[0], errors[0]


# ---------------------------------------------------------------------------------------------
# Help
# ---------------------------------------------------------------------------------------------


def test_root_help_lists_every_registered_command():
    proc = _run(["--help"])
    assert proc.returncode == 0 and "Usage: datakit" in proc.stdout
    for name in _registered():
        assert name in proc.stdout
    assert "doctor" in _registered()


def test_version(datakit_main):
    from datakit import __version__

    proc = datakit_main("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"datakit {__version__}"


def test_bare_datakit_prints_help_and_exits_2():
    proc = _run([])
    assert proc.returncode == EXIT_USAGE and "Usage: datakit" in proc.stdout and "Traceback" not in proc.stderr


# Every command datakit ships. Typed out here, not read from the code: a deleted or unregistered command
# must fail this test (and CI), not disappear from `datakit --help`.
EXPECTED_COMMANDS = "cutout backgrounds composite tag tags review emit train doctor eval".split()
# Commands expected once a branch in progress merges; empty when everything has landed.
PENDING_MERGE: set[str] = set()


def test_every_expected_command_is_registered():
    registered = set(_registered())
    missing = set(EXPECTED_COMMANDS) - PENDING_MERGE - registered
    assert not missing, f"commands gone from `datakit`: {sorted(missing)}"
    assert registered <= set(EXPECTED_COMMANDS), f"new commands: add them to EXPECTED_COMMANDS: {sorted(registered - set(EXPECTED_COMMANDS))}"
    arrived = PENDING_MERGE & registered
    assert not arrived, f"{sorted(arrived)} is registered now: remove it from PENDING_MERGE"


@pytest.mark.parametrize("module", COMMAND_MODULES)
def test_every_command_module_registers(module):
    import importlib

    mod = importlib.import_module(f"datakit.cli.{module}")
    assert callable(getattr(mod, "register", None))


def test_a_missing_command_module_fails_loudly():
    """`datakit` must not start with a command silently missing (as a find_spec guard once allowed)."""
    code = textwrap.dedent("""
        import sys
        sys.modules["datakit.cli.emit"] = None  # as if datakit/cli/emit.py were deleted
        import datakit.cli.main
    """)
    proc = _run([], code=code)
    assert proc.returncode != 0 and "datakit.cli.emit" in proc.stderr


def _all_commands() -> list[tuple[str, object]]:
    """Every (path, command) including subcommands of groups (`tags rewrite`)."""
    out, stack = [], list(_registered().items())
    while stack:
        name, cmd = stack.pop(0)
        out.append((name, cmd))
        stack.extend((f"{name} {sub}", c) for sub, c in (getattr(cmd, "commands", None) or {}).items())
    return out


@pytest.mark.parametrize("name", [n for n, _ in _all_commands()])
def test_subcommand_help_works(name, datakit_main):
    proc = datakit_main(*name.split(), "--help")
    assert proc.returncode == 0, proc.stderr
    assert f"Usage: datakit {name}" in proc.stdout and "--help" in proc.stdout


@pytest.mark.parametrize("name", [n for n, c in _all_commands() if not getattr(c, "commands", None)])
def test_every_option_and_command_has_help_text(name):
    cmd = dict(_all_commands())[name]
    assert (cmd.help or cmd.short_help or "").strip(), f"datakit {name} has no docstring/help"
    missing = [max(p.opts, key=len) for p in cmd.params
               if getattr(p, "param_type_name", None) == "option" and not (getattr(p, "help", None) or "").strip()]
    assert missing == [], f"datakit {name}: options without help text: {missing}"


_IMPORT_CHECK = textwrap.dedent(
    """
    import sys
    from datakit.cli.main import main
    bad = []
    for argv in {argvs!r}:
        before = set(sys.modules)
        try:
            main(argv)
        except SystemExit as exc:
            if exc.code != 0:
                bad.append(" ".join(argv) + " exited " + str(exc.code))
        heavy = [m for m in {heavy!r} if m in sys.modules]
        if heavy:
            bad.append(" ".join(argv) + " imported " + ",".join(heavy))
            break
    print("BAD=" + repr(bad))
    """
)


def test_help_does_not_import_heavy_libraries():
    """`datakit --help` and every subcommand's --help, in one fresh process, import no heavy library."""
    argvs = [["--help"], ["--version"]] + [[*n.split(), "--help"] for n, _ in _all_commands()]
    proc = _run([], code=_IMPORT_CHECK.format(argvs=argvs, heavy=HEAVY))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("BAD=")]
    assert lines == ["BAD=[]"], proc.stdout[-2000:] + proc.stderr[-2000:]


# ---------------------------------------------------------------------------------------------
# Usage errors: exit 2, one `error:` line, no traceback
# ---------------------------------------------------------------------------------------------


def test_unknown_command():
    _assert_one_error_line(_run(["no-such-command"]), EXIT_USAGE, "no-such-command", "datakit --help")


def test_unknown_option(datakit_main):
    _assert_one_error_line(datakit_main("doctor", "--no-such-option"), EXIT_USAGE, "--no-such-option", "datakit doctor --help")


@pytest.mark.parametrize("name", [n for n, c in _all_commands() if not getattr(c, "commands", None)])
def test_missing_required_argument_or_bad_option(name, datakit_main):
    cmd = dict(_all_commands())[name]
    required = [p for p in cmd.params if getattr(p, "required", False)]
    if not required:
        proc = datakit_main(*name.split(), "--no-such-option")
    else:
        proc = datakit_main(*name.split())  # no arguments at all
    _assert_one_error_line(proc, EXIT_USAGE)


@pytest.mark.parametrize("stage", ["cutout", "tag", "composite"])
def test_missing_input_folder_is_a_usage_error(stage, tmp_path, datakit_main):
    proc = datakit_main(stage, str(tmp_path / "does-not-exist"), str(tmp_path / "out"))
    _assert_one_error_line(proc, EXIT_USAGE, "does-not-exist")
    assert not (tmp_path / "out" / "datakit.json").exists()


# ---------------------------------------------------------------------------------------------
# Exit codes, --quiet and --json through the real entry point (main), with a probe command built
# on the shared options and execute() exactly as stage commands are.
# ---------------------------------------------------------------------------------------------

def copy_one(task, out):
    """Probe stage worker (module level: pool processes import it)."""
    from datakit.imageio import open_image, save_image_atomic
    from datakit.stage import TaskResult

    img = open_image(task.payload).image
    save_image_atomic(img, Path(out) / (task.params["stem"] + ".png"))
    return TaskResult(key=task.key, outputs=[task.params["stem"] + ".png"])


def _probe_work(reporter, mode, in_dir, out_dir, seed, workers, force):
    raises = {
        "usage": errors.UsageError("bad --thing value 'x': expected a number"),
        "model": errors.ModelNotFoundError("model 'foo' not found in /models: fetch it with ..."),
        "dependency": errors.DependencyError("the rembg method needs 'rembg': pip install rembg"),
        "stage": errors.StageError("every item failed"),
        "internal": ZeroDivisionError("oops"),
        "interrupt": KeyboardInterrupt(),
    }
    if mode in raises:
        raise raises[mode]
    if mode == "none":
        return None
    from datakit.inputs import discover
    from datakit.stage import StageRun, Task, run_simple_stage

    inputs = discover(in_dir)
    tasks = [Task(key=i.key, inputs=[i.path], params={"stem": i.stem}, payload=str(i.path)) for i in inputs.items]
    run = StageRun("probe", out_dir, {"seed": seed}, inputs_dir=in_dir, upstream=inputs.upstream, force=force,
                   reporter=reporter, seed=seed, pre_skipped=inputs.skipped)
    reporter.warn("this is a warning")
    return run_simple_stage(run, tasks, copy_one, workers=resolve_workers(workers), shared=str(out_dir))


probe_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)


@probe_app.command("probe")
def _probe_command(
    in_dir: InDir,
    out_dir: OutDir,
    mode: Annotated[str, typer.Option("--mode", help="What to do.")] = "run",
    seed: SeedOpt = 0,
    workers: WorkersOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    json_mode: JsonOpt = False,
) -> None:
    """Test probe."""
    execute(lambda r: _probe_work(r, mode, in_dir, out_dir, seed, workers, force), quiet=quiet, json_mode=json_mode)


@probe_app.command("other")
def _other() -> None:
    """A second command, so `probe` stays a subcommand as stages are."""


@pytest.fixture
def probe(tmp_path, monkeypatch, capsys):
    """probe(mode, *flags, bad=False): run `datakit probe IN OUT --mode MODE` through main() in-process."""
    import datakit.cli.main as cli_main

    monkeypatch.setattr(cli_main, "app", probe_app)
    monkeypatch.setenv("COLUMNS", "120")
    src = tmp_path / "in"
    src.mkdir()
    for k in range(3):
        Image.new("RGB", (16, 16), (k * 40, 10, 10)).save(src / f"img{k}.png")

    def call(mode="run", *flags, bad=False, out=None):
        if bad:
            (src / "broken.png").write_bytes(b"")
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            workers = [] if "--workers" in flags else ["--workers", "1"]  # a pool only where the test wants one
            cli_main.main(["probe", str(src), str(out or tmp_path / "out"), "--mode", mode, *workers, *flags])
        captured = capsys.readouterr()
        return _Proc(exc.value.code, captured.out, captured.err)

    call.out = tmp_path / "out"
    call.src = src
    return call


@pytest.mark.parametrize(
    "mode,code,fragment",
    [
        ("usage", EXIT_USAGE, "bad --thing value"),
        ("model", EXIT_MISSING, "model 'foo' not found"),
        ("dependency", EXIT_MISSING, "pip install rembg"),
        ("stage", EXIT_RUNTIME, "every item failed"),
        ("interrupt", EXIT_INTERRUPTED, "interrupted"),
    ],
)
def test_named_errors_map_to_documented_exit_codes(probe, mode, code, fragment):
    _assert_one_error_line(probe(mode), code, fragment)


def test_internal_error_shows_where_and_exits_1(probe):
    proc = probe("internal")
    assert proc.returncode == EXIT_INTERNAL
    assert "Traceback" in proc.stderr  # a bug: the traceback is wanted
    assert proc.stderr.strip().splitlines()[-1].startswith("error: internal error: ZeroDivisionError: oops")


def test_ok_run_prints_a_summary_and_exits_0(probe):
    proc = probe("run")
    assert proc.returncode == EXIT_OK, proc.stderr
    assert "datakit probe" in proc.stderr and "warning: this is a warning" in proc.stderr
    assert proc.stdout == ""  # people's output goes to stderr; stdout is for --json
    again = probe("run")
    assert again.returncode == EXIT_OK and "nothing to do" in again.stderr


def test_skipped_inputs_exit_3_and_are_named(probe):
    proc = probe("run", bad=True)
    assert proc.returncode == EXIT_PARTIAL
    assert "skipped broken.png: zero-byte file" in proc.stderr


def test_none_result_exits_0(probe):
    assert probe("none").returncode == EXIT_OK


def test_quiet_prints_only_warnings(probe):
    proc = probe("run", "--quiet", "--workers", "2")
    # No progress bar, no summary; warnings (e.g. a GPU that fell back to CPU) are never secret.
    assert proc.returncode == EXIT_OK and proc.stdout == ""
    assert proc.stderr.splitlines() == ["warning: this is a warning"]
    assert (probe.out / "datakit.json").is_file() and len(list(probe.out.glob("*.png"))) == 3


def test_quiet_still_prints_errors(probe):
    _assert_one_error_line(probe("usage", "--quiet"), EXIT_USAGE, "bad --thing")


def test_json_prints_one_object_on_stdout(probe):
    proc = probe("run", "--json", bad=True)
    assert proc.returncode == EXIT_PARTIAL
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    info = json.loads(lines[0])
    assert info["stage"] == "probe" and info["counts"]["out"] == 3 and info["counts"]["skipped"] == 1
    assert info["skipped"] == [{"source": "broken.png", "reason": "zero-byte file"}]
    assert info["warnings"] == ["this is a warning"]
    assert proc.stderr == ""  # nothing for people in JSON mode


def test_json_error_is_json_too(probe):
    proc = probe("model", "--json")
    assert proc.returncode == EXIT_MISSING
    assert json.loads(proc.stdout) == {"error": "model 'foo' not found in /models: fetch it with ...", "exit_code": EXIT_MISSING}
    assert proc.stderr.startswith("error: model 'foo'")


def test_bad_shared_option_values_are_usage_errors(probe):
    _assert_one_error_line(probe("run", "--workers", "0"), EXIT_USAGE, "--workers")
    _assert_one_error_line(probe("run", "--seed", "abc"), EXIT_USAGE, "--seed")


def test_out_equal_to_in_is_a_usage_error(probe):
    _assert_one_error_line(probe("run", out=probe.src), EXIT_USAGE, "OUT must differ from IN")
    assert sorted(p.name for p in probe.src.iterdir()) == ["img0.png", "img1.png", "img2.png"]


def test_real_process_exit_code_and_summary(tmp_path):
    """End to end in a fresh process: the console script's exit status is the documented one."""
    src = tmp_path / "in"
    src.mkdir()
    (src / "zero.png").write_bytes(b"")
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import datakit.cli.main as m, test_cli
        m.app = test_cli.probe_app
        if __name__ == "__main__":
            m.main(["probe", {str(src)!r}, {str(tmp_path / "out")!r}, "--json"])
    """)
    proc = _run([], code=code)
    assert proc.returncode == EXIT_PARTIAL, proc.stderr
    assert json.loads(proc.stdout)["skipped"][0]["source"] == "zero.png"
