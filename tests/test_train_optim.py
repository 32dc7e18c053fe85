"""Optimizers (missing packages are clear errors), LR schedules, gradient clipping."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from datakit.errors import DependencyError
from datakit.train.config import TrainConfig
from datakit.train.optim import clip_gradients, make_optimizer, make_scheduler


def _groups():
    return [{"params": [torch.nn.Parameter(torch.ones(3))], "lr": 1e-3}, {"params": [torch.nn.Parameter(torch.ones(2))], "lr": 5e-4}]


def _lrs(cfg, total):
    opt = make_optimizer("adamw", _groups(), cfg, device_type="cpu")
    sched = make_scheduler(opt, cfg, total)
    out = []
    for _ in range(total):
        out.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return out


def test_adamw_keeps_group_lrs_and_settings():
    cfg = TrainConfig(weight_decay=0.1, betas=(0.8, 0.95))
    opt = make_optimizer("adamw", _groups(), cfg, device_type="cpu")
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 5e-4]
    assert opt.param_groups[0]["betas"] == (0.8, 0.95) and opt.param_groups[0]["weight_decay"] == 0.1


def test_adafactor_comes_from_transformers():
    opt = make_optimizer("adafactor", _groups(), TrainConfig(), device_type="cpu")
    assert type(opt).__name__ == "Adafactor" and opt.param_groups[0]["lr"] == 1e-3


@pytest.mark.parametrize("name,module", [("adamw8bit", "bitsandbytes"), ("prodigy", "prodigyopt"), ("lion", "lion_pytorch")])
def test_optional_optimizers_need_their_package(name, module):
    if importlib.util.find_spec(module) is not None:
        assert make_optimizer(name, _groups(), TrainConfig(), device_type="cpu") is not None
    else:
        with pytest.raises(DependencyError, match="pip install"):
            make_optimizer(name, _groups(), TrainConfig(), device_type="cpu")


def test_schedules_with_warmup():
    lrs = _lrs(TrainConfig(lr=1e-3, lr_scheduler="constant", warmup_steps=4), 10)
    assert lrs[:4] == pytest.approx([0, 0.25e-3, 0.5e-3, 0.75e-3]) and lrs[4:] == pytest.approx([1e-3] * 6)
    cos = _lrs(TrainConfig(lr=1e-3, lr_scheduler="cosine"), 10)
    assert cos[0] == pytest.approx(1e-3) and cos[5] == pytest.approx(0.5e-3) and cos == sorted(cos, reverse=True)
    restarts = _lrs(TrainConfig(lr=1e-3, lr_scheduler="cosine_with_restarts", lr_cycles=2), 10)
    assert restarts[0] == pytest.approx(1e-3) and restarts[5] == pytest.approx(1e-3) and restarts[4] < 2e-4
    lin = _lrs(TrainConfig(lr=1e-3, lr_scheduler="linear"), 10)
    assert lin[5] == pytest.approx(0.5e-3)
    poly = _lrs(TrainConfig(lr=1e-3, lr_scheduler="polynomial", lr_power=2.0), 10)
    assert poly[5] < lin[5]


def test_gradient_clipping_by_norm_and_value():
    p = torch.nn.Parameter(torch.zeros(4))
    p.grad = torch.tensor([3.0, 4.0, 0.0, 0.0])
    norm = clip_gradients([p], TrainConfig(max_grad_norm=1.0))
    assert norm == pytest.approx(5.0) and float(p.grad.norm()) == pytest.approx(1.0, rel=1e-4)
    p.grad = torch.tensor([3.0, -4.0, 0.5, 0.0])
    assert clip_gradients([p], TrainConfig(max_grad_norm=1.0, clip_mode="value")) is None
    assert p.grad.tolist() == [1.0, -1.0, 0.5, 0.0]
    p.grad = torch.tensor([30.0, 0, 0, 0])
    assert clip_gradients([p], TrainConfig(max_grad_norm=0)) is None and p.grad[0] == 30.0
