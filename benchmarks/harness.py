"""What every benchmark shares: the machine's description, the results JSON, child-process runs with
their CPU time and peak memory, and a clock on the optimizer's steps.

Results go to benchmarks/results/<name>.json (the shape is documented in readme_table.py, which
merges them into the README); a --quick run writes to benchmarks/results/quick/ instead, so a smoke
run never replaces a measurement in the README.

`python benchmarks/harness.py --steps-to FILE -- PROGRAM ARGS...` runs a Python program (a script
path, or `-m module`) with the step clock on, and writes its timestamps to FILE: the way the
training benchmarks time kohya's train_network.py and `datakit train` alike, without touching
either one's code.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SCHEMA = 1


# ---- the machine ----------------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def machine() -> dict:
    """Cores, CPU, memory, GPU (when torch is already imported and sees one), versions, load average."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        mem_gb = None
    gpu = None
    torch = sys.modules.get("torch")  # importing torch only to say "no GPU" would cost seconds
    if torch is not None and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(0)
    packages = {p: _version(p) for p in ("datakit", "torch", "diffusers", "transformers", "onnxruntime", "numpy")}
    return {
        "cores": cores, "cpu": _cpu_model(), "memory_gb": mem_gb, "gpu": gpu,
        "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
        "packages": {k: v for k, v in packages.items() if v},
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def machine_line(m: dict) -> str:
    """'2 cores (AMD EPYC ...), 23 GiB, no GPU, load 1.2' for a results table."""
    gpu = m.get("gpu") or "no GPU"
    load = m.get("load_average")
    return f"{m['cores']} cores ({m['cpu']}), {m.get('memory_gb')} GiB, {gpu}" + (f", load {load[0]}" if load else "")


# ---- results --------------------------------------------------------------------------------------

@dataclass
class Row:
    """One line of the README's table: what datakit did, what the baseline did, the goal and the verdict."""

    case: str
    datakit: str
    baseline: str
    goal: str = "—"
    result: str = "—"
    met: bool | None = None


@dataclass
class Results:
    """One benchmark run, as written to benchmarks/results/<name>.json."""

    benchmark: str
    title: str
    settings: dict
    rows: list[Row] = field(default_factory=list)
    measurements: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    quick: bool = False


def write_results(res: Results, *, started: float | None = None, machine_at_start: dict | None = None) -> Path:
    """Write the results JSON atomically; returns its path (results/quick/ for a --quick run)."""
    folder = RESULTS / "quick" if res.quick else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    m = machine()
    if machine_at_start is not None:
        m["load_average_at_start"] = machine_at_start.get("load_average")
    payload = {
        "schema": SCHEMA,
        "benchmark": res.benchmark,
        "title": res.title,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "seconds": round(time.perf_counter() - started, 1) if started is not None else None,
        "quick": res.quick,
        "machine": m,
        "settings": res.settings,
        "rows": [asdict(r) for r in res.rows],
        "measurements": res.measurements,
        "notes": res.notes,
    }
    dest = folder / f"{res.benchmark}.json"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{dest.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh, indent=2, default=str)
        fh.write("\n")
    os.replace(tmp, dest)
    print(f"results: {dest}")
    return dest


def print_rows(rows: list[Row]) -> None:
    """The rows as a plain table on stdout."""
    for r in rows:
        print(f"- {r.case}\n    datakit:  {r.datakit}\n    baseline: {r.baseline}\n    goal:     {r.goal}  ->  {r.result}"
              + ("" if r.met is None else ("  (met)" if r.met else "  (NOT met)")))


# ---- child processes ------------------------------------------------------------------------------

@dataclass
class ChildRun:
    """A finished child process: wall and CPU seconds (it and the children it waited for), peak RSS."""

    returncode: int
    wall_s: float
    cpu_s: float
    peak_rss_gb: float  # the largest resident set of the child or any process it waited for
    stdout: str
    stderr: str


def run_child(cmd: list[str], *, env: dict | None = None, cwd: str | Path | None = None, timeout: float | None = None,
              log: Path | None = None) -> ChildRun:
    """Run a command; its own resource usage comes from wait4, not from the parent's totals.

    With log, its stdout and stderr are kept in log and log.err.
    """
    out = open(log, "w+") if log else tempfile.TemporaryFile("w+")
    err = open(f"{log}.err", "w+") if log else tempfile.TemporaryFile("w+")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd, text=True)
    deadline = None if timeout is None else t0 + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if deadline is not None and time.perf_counter() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    err.seek(0)
    stdout, stderr = out.read(), err.read()
    out.close()
    err.close()
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    rss = usage.ru_maxrss / (2**30 if sys.platform == "darwin" else 2**20)
    return ChildRun(proc.returncode, wall, usage.ru_utime + usage.ru_stime, rss, stdout, stderr)


def result_line(text: str, tag: str = "RESULT ") -> dict:
    """The JSON a child printed on a line starting with tag."""
    for line in text.splitlines():
        if line.startswith(tag):
            return json.loads(line[len(tag):])
    raise ValueError(f"no {tag.strip()} line in the output")


def self_usage() -> dict:
    """This process's CPU seconds and peak RSS so far (for a child that reports on itself)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_s": ru.ru_utime + ru.ru_stime, "peak_rss_gb": ru.ru_maxrss / (2**30 if sys.platform == "darwin" else 2**20)}


def median(values: list[float]) -> float:
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


# ---- the step clock -------------------------------------------------------------------------------

class StepClock:
    """Timestamps of every optimizer step (torch's global step hook: any trainer, no change to its code).

    Until the first step it also adds up the time spent inside VAE encoders (any module whose class is
    named `Encoder` under a diffusers AutoencoderKL): the latent-caching compute of both trainers.
    """

    def __init__(self, *, vae_encoders: bool = True):
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self.t0 = time.perf_counter()
        self.steps: list[float] = []
        self.cpu: list[float] = []  # this process's CPU seconds (all its threads) at each step
        self.encoder_s = 0.0
        self.encoder_calls = 0
        self.encoder_span: list[float] = []
        self._enc_start: dict[int, float] = {}
        self._handles = [register_optimizer_step_post_hook(self._on_step)]
        if vae_encoders:
            from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

            self._handles += [register_module_forward_pre_hook(self._pre), register_module_forward_hook(self._post)]

    @staticmethod
    def _is_vae_encoder(module) -> bool:
        cls = type(module)  # diffusers.models.autoencoders.vae.Encoder in both datakit and kohya
        return cls.__name__ == "Encoder" and cls.__module__.startswith("diffusers.")

    def _pre(self, module, args):
        if self._is_vae_encoder(module):
            now = time.perf_counter()
            self._enc_start[id(module)] = now
            if not self.encoder_span:
                self.encoder_span = [now, now]

    def _post(self, module, args, output):
        start = self._enc_start.pop(id(module), None)
        if start is not None:
            now = time.perf_counter()
            self.encoder_s += now - start
            self.encoder_calls += 1
            self.encoder_span[1] = now

    def _on_step(self, optimizer, args, kwargs):
        self.steps.append(time.perf_counter())
        self.cpu.append(time.process_time())
        if len(self.steps) == 1 and len(self._handles) > 1:  # caching is over: no per-module cost in the loop
            for h in self._handles[1:]:
                h.remove()
            self._handles = self._handles[:1]

    def close(self) -> None:
        """Remove the hooks (a clock in a long-lived process, e.g. a test)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def summary(self, warmup: int = 1) -> dict:
        """Step times (wall, and this process's CPU) after `warmup` steps, time to the first step, encoder time."""
        gaps = [b - a for a, b in zip(self.steps, self.steps[1:])]
        cpu_gaps = [b - a for a, b in zip(self.cpu, self.cpu[1:])]
        steady = gaps[warmup - 1:] if warmup >= 1 else gaps
        steady_cpu = cpu_gaps[warmup - 1:] if warmup >= 1 else cpu_gaps
        torch = sys.modules.get("torch")
        gpu = None
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            gpu = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        return {
            "peak_gpu_gb": gpu,
            "steps": len(self.steps),
            "first_step_s": round(self.steps[0] - self.t0, 3) if self.steps else None,
            "step_s": [round(g, 4) for g in gaps],
            "median_step_s": round(median(steady), 4) if steady else None,
            "step_cpu_s": [round(g, 4) for g in cpu_gaps],
            "median_step_cpu_s": round(median(steady_cpu), 4) if steady_cpu else None,
            "vae_encoder_s": round(self.encoder_s, 3),
            "vae_encoder_calls": self.encoder_calls,
            "vae_encoding_span_s": round(self.encoder_span[1] - self.encoder_span[0], 3) if self.encoder_span else None,
        }


def _launch(argv: list[str]) -> None:
    """--steps-to FILE -- PROGRAM ARGS: run PROGRAM (a .py path or -m module) under a StepClock."""
    import atexit
    import runpy

    if len(argv) < 4 or argv[0] != "--steps-to" or argv[2] != "--":
        raise SystemExit("usage: harness.py --steps-to FILE -- (SCRIPT.py | -m MODULE) [ARGS...]")
    dest, program = Path(argv[1]), argv[3:]
    clock = StepClock()

    def dump():
        dest.write_text(json.dumps(clock.summary()))

    atexit.register(dump)
    if program[0] == "-m":
        sys.argv = [program[1], *program[2:]]
        runpy.run_module(program[1], run_name="__main__", alter_sys=True)
    else:
        script = Path(program[0]).resolve()
        sys.argv = [str(script), *program[1:]]
        sys.path.insert(0, str(script.parent))
        runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    _launch(sys.argv[1:])
