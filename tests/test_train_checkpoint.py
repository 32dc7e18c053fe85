"""Training state without pickle: safetensors + JSON round trip, exact resume of every optimizer, atomic folders."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from datakit.errors import UsageError
from datakit.train.checkpoint import (
    STATE_JSON,
    STATE_TENSORS,
    TrainingState,
    apply_training_state,
    atomic_folder,
    capture_training_state,
    has_training_state,
    load_training_state,
    save_training_state,
)


def _net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))


def _adamw(params, **kw):
    return torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1, foreach=True, **kw)


def _adafactor(params):
    from transformers.optimization import Adafactor

    return Adafactor(params, lr=1e-2, scale_parameter=False, relative_step=False, warmup_init=False)


def _adafactor_relative(params):
    from transformers.optimization import Adafactor  # relative step: its state holds step counts and RMS

    return Adafactor(params, lr=None, scale_parameter=True, relative_step=True, warmup_init=True)


def _optional(module, build):
    def make(params):
        return build(pytest.importorskip(module), params)  # a third-party optimizer: tested when installed
    return make


OPTIMIZERS = {
    "adamw": _adamw,
    "adamw-amsgrad": lambda p: _adamw(p, amsgrad=True),
    "sgd": lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9),
    "adafactor": _adafactor,
    "adafactor-relative": _adafactor_relative,
    "prodigy": _optional("prodigyopt", lambda m, p: m.Prodigy(p, lr=1.0, weight_decay=0.01)),
    "lion": _optional("lion_pytorch", lambda m, p: m.Lion(p, lr=1e-3, weight_decay=0.01)),
}


def _step(net, opt, sched, i):
    g = torch.Generator().manual_seed(1000 + i)
    x = torch.randn(4, 6, generator=g)
    loss = (net(x) - torch.randn(4, 3, generator=g)).pow(2).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if sched is not None:
        sched.step()


def _schedule(opt):
    from diffusers.optimization import get_scheduler

    if getattr(opt, "defaults", {}).get("lr") is None:
        return None  # Adafactor's relative step computes its own LR
    return get_scheduler("cosine", optimizer=opt, num_warmup_steps=2, num_training_steps=10)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_resumed_optimizer_continues_bit_identically(tmp_path, name):
    make = OPTIMIZERS[name]
    whole = _net()
    opt = make(whole.parameters())
    sched = _schedule(opt)
    for i in range(8):
        _step(whole, opt, sched, i)

    first = _net()
    opt1 = make(first.parameters())
    sched1 = _schedule(opt1)
    for i in range(3):
        _step(first, opt1, sched1, i)
    save_training_state(tmp_path / "ck", capture_training_state(3, first, optimizer=opt1, lr_scheduler=sched1,
                                                                 settings={"seed": 7}))

    again = _net(seed=99)  # other starting weights: everything must come from the folder
    opt2 = make(again.parameters())
    sched2 = _schedule(opt2)
    state = load_training_state(tmp_path / "ck")
    assert state.settings == {"seed": 7}
    assert apply_training_state(state, network=again, optimizer=opt2, lr_scheduler=sched2) == 3
    for i in range(3, 8):
        _step(again, opt2, sched2, i)
    for (ka, a), (kb, b) in zip(whole.state_dict().items(), again.state_dict().items()):
        assert ka == kb and torch.equal(a, b), ka  # bit for bit, not approximately
    if sched is not None:
        assert sched.get_last_lr() == sched2.get_last_lr()


def test_every_kind_of_value_round_trips_exactly(tmp_path):
    tensors = {
        "f32": torch.randn(3, 2), "bf16": torch.randn(4).bfloat16(), "f16": torch.randn(2, 2).half(),
        "i64": torch.arange(5), "bool": torch.tensor([True, False]), "u8": torch.arange(7, dtype=torch.uint8),
        "scalar": torch.tensor(3.5), "empty": torch.zeros(0, 4),
    }
    view = torch.arange(10.0)
    weird = {
        0: {"step": torch.tensor(4.0), "exp_avg": view[2:5], "again": view[2:5]},  # int keys, shared storage
        "__tensor__": "not a tag", "tuple": (0.9, 0.999), "nested": [[1, (2, None)], {"a": True}],
        "floats": [0.1, 1 / 3, 1e-300, float("inf"), float("-inf")], "big": 2**62 + 1, "dtype": torch.bfloat16,
        "array": np.arange(6, dtype=">u4").reshape(2, 3), "np_int": np.int64(5), "text": "é\n\"",
    }
    state = TrainingState(step=12, network=tensors, optimizer=weird, optimizer_class="x.Y",
                          lr_scheduler={"last_epoch": 3, "_last_lr": [0.001]}, scaler={"scale": 65536.0},
                          settings={"seed": 1, "nan": float("nan")})
    save_training_state(tmp_path, state)
    json.loads((tmp_path / STATE_JSON).read_text())  # strict JSON (no NaN literals)
    back = load_training_state(tmp_path)
    assert back.step == 12 and back.optimizer_class == "x.Y" and back.scaler == {"scale": 65536.0}
    for k, t in tensors.items():
        assert back.network[k].dtype == t.dtype and torch.equal(back.network[k], t), k
    o = back.optimizer
    assert torch.equal(o[0]["exp_avg"], torch.tensor([2.0, 3.0, 4.0])) and o[0]["step"].shape == ()
    assert o["__tensor__"] == "not a tag" and o["tuple"] == (0.9, 0.999) and isinstance(o["tuple"], tuple)
    assert o["nested"] == [[1, (2, None)], {"a": True}] and o["big"] == 2**62 + 1 and o["dtype"] is torch.bfloat16
    assert o["floats"] == [0.1, 1 / 3, 1e-300, float("inf"), float("-inf")] and o["text"] == "é\n\""
    assert o["array"].dtype == np.dtype(">u4") and (o["array"] == np.arange(6).reshape(2, 3)).all()
    assert np.isnan(back.settings["nan"]) and back.lr_scheduler == {"last_epoch": 3, "_last_lr": [0.001]}
    with pytest.raises(TypeError, match="cannot hold"):
        save_training_state(tmp_path / "bad", TrainingState(step=0, network={}, settings={"f": open}))


def test_rng_states_come_back(tmp_path):
    torch.manual_seed(3)
    np.random.seed(4)
    random.seed(5)
    net = _net()
    save_training_state(tmp_path, capture_training_state(1, net))
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    apply_training_state(load_training_state(tmp_path), network=net)
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expected[0]) and (got[1] == expected[1]).all() and got[2] == expected[2]


def test_damaged_or_foreign_folders_are_refused_clearly(tmp_path):
    net = _net()
    opt = _adamw(net.parameters())
    _step(net, opt, None, 0)
    save_training_state(tmp_path / "ck", capture_training_state(1, net, optimizer=opt))
    assert has_training_state(tmp_path / "ck") and not has_training_state(tmp_path)
    with pytest.raises(UsageError, match="not a checkpoint folder"):
        load_training_state(tmp_path)
    # other network settings, another optimizer
    with pytest.raises(UsageError, match="other network settings"):
        apply_training_state(load_training_state(tmp_path / "ck"), network=torch.nn.Linear(6, 5))
    with pytest.raises(UsageError, match="other network settings"):
        apply_training_state(load_training_state(tmp_path / "ck"), network=torch.nn.Sequential(torch.nn.Linear(6, 4)))
    other = _net()
    with pytest.raises(UsageError, match="torch.optim.adamw.AdamW.*torch.optim.sgd.SGD"):
        apply_training_state(load_training_state(tmp_path / "ck"), network=other,
                             optimizer=torch.optim.SGD(other.parameters(), lr=0.1))
    # a changed tensors file, a truncated one, a newer format, broken JSON
    data = (tmp_path / "ck" / STATE_TENSORS).read_bytes()
    (tmp_path / "ck" / STATE_TENSORS).write_bytes(data[:-4] + b"\0\0\0\0")
    with pytest.raises(UsageError, match="changed or damaged"):
        load_training_state(tmp_path / "ck")
    (tmp_path / "ck" / STATE_TENSORS).write_bytes(data)
    body = json.loads((tmp_path / "ck" / STATE_JSON).read_text())
    (tmp_path / "ck" / STATE_JSON).write_text(json.dumps(dict(body, version=99)))
    with pytest.raises(UsageError, match="newer datakit"):
        load_training_state(tmp_path / "ck")
    (tmp_path / "ck" / STATE_JSON).write_text(json.dumps(dict(body, network=["nope"])))
    with pytest.raises(UsageError, match="damaged"):
        load_training_state(tmp_path / "ck")
    (tmp_path / "ck" / STATE_JSON).write_text("{not json")
    with pytest.raises(UsageError, match="not readable JSON"):
        load_training_state(tmp_path / "ck")
    (tmp_path / "ck" / STATE_TENSORS).unlink()
    (tmp_path / "ck" / STATE_JSON).write_text(json.dumps(body))
    with pytest.raises(UsageError, match="incomplete"):
        load_training_state(tmp_path / "ck")


def test_a_checkpoint_folder_exists_only_when_complete(tmp_path):
    dest = tmp_path / "checkpoints" / "step-000004"
    with pytest.raises(RuntimeError):
        with atomic_folder(dest) as tmp:
            (tmp / "a.safetensors").write_bytes(b"x")
            raise RuntimeError("killed half-way")
    assert not dest.exists() and sorted(p.name for p in dest.parent.iterdir()) == []
    with atomic_folder(dest) as tmp:
        (tmp / "a").write_text("first")
        assert not dest.exists()
    with pytest.raises(RuntimeError):
        with atomic_folder(dest) as tmp:
            (tmp / "a").write_text("second")
            raise RuntimeError
    assert (dest / "a").read_text() == "first"  # a failed rewrite keeps the complete folder
    with atomic_folder(dest) as tmp:
        (tmp / "b").write_text("third")
    assert sorted(p.name for p in dest.iterdir()) == ["b"] and sorted(p.name for p in dest.parent.iterdir()) == [dest.name]


def test_a_captured_state_is_a_snapshot(tmp_path):
    net = _net()
    opt = _adamw(net.parameters())
    _step(net, opt, None, 0)
    state = capture_training_state(1, net, optimizer=opt)
    before = {k: v.clone() for k, v in opt.state_dict()["state"][0].items()}
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    _step(net, opt, None, 1)  # the live run moves on; the snapshot must not
    save_training_state(tmp_path, state)
    back = load_training_state(tmp_path)
    assert all(torch.equal(back.optimizer["state"][0][k], v) for k, v in before.items())
    assert all(torch.equal(back.network[k], v) for k, v in weights.items())
