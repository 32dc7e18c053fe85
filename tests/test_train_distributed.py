"""Two CPU processes (torchrun/accelerate, gloo) train one LoRA together and end with identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from datakit.testing import save_tiny_model, write_tiny_dataset


@pytest.mark.slow
def test_two_processes_train_and_agree(tmp_path):
    model = save_tiny_model(tmp_path / "model", "sd1")
    ds = write_tiny_dataset(tmp_path / "ds", images=2, size=16)
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "datakit.cli.main", "train", str(ds), "--base-model", str(model), "--output", str(tmp_path / "out"),
           "--max-steps", "3", "--rank", "4", "--device", "cpu", "--quiet", "--save-precision", "fp32"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((tmp_path / "out" / "datakit.json").read_text())
    assert info["distributed"] == {"processes": 2, "weights_identical": True}
    assert info["plan"]["world_size"] == 2 and info["steps"] == 3
    assert (tmp_path / "out" / "lora.safetensors").is_file()
