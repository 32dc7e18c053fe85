"""Acceptance: missing-model messages tell the user a command that exists in the installed
huggingface_hub (`hf download`; its old `huggingface-cli` is gone) and never mention a stack trace
that datakit does not print."""

from __future__ import annotations

import shlex

import pytest

from datakit.errors import ModelNotFoundError
from datakit.models import diffusion
from datakit.testing import build_tiny_pipeline


@pytest.mark.parametrize(("family", "name"), [("sd1", "tokenizer"), ("sdxl", "tokenizer_2")])
def test_missing_tokenizer_names_a_working_hf_download_line(tmp_path, monkeypatch, family, name):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(diffusion, "_cached_tokenizer_folder", lambda repo, sub: None)
    with pytest.raises(ModelNotFoundError) as err:
        diffusion._find_tokenizer(family, name, tmp_path)
    message = str(err.value)
    assert "huggingface-cli" not in message
    command = message.split("`hf download ", 1)[1].split("`", 1)[0]
    words = shlex.split(command)
    # One repo id, then only --include options (each with its own flag: a bare second pattern
    # would be taken as a file name by `hf download`).
    assert "/" in words[0] and words[1::2] == ["--include"] * (len(words) // 2)


def test_first_line_drops_the_pointer_to_an_unseen_stack_trace():
    exc = OSError("Cannot load model x/y: not cached. Please check out the root cause in the stacktrace above.")
    assert diffusion._first_line(exc) == "Cannot load model x/y: not cached"


def test_loading_a_model_prints_nothing_of_its_own(tmp_path, capfd):
    """diffusers' per-component progress bars and transformers' notes used to break --quiet."""
    folder = tmp_path / "tiny"
    build_tiny_pipeline("sd1").save_pretrained(str(folder))
    capfd.readouterr()
    pipe = diffusion.load_diffusion_pipeline(folder)
    captured = capfd.readouterr()
    assert pipe is not None
    assert "Loading pipeline components" not in captured.err and "torchvision" not in captured.err
    assert captured.out == ""
