"""`datakit tags rewrite|stats|diff` through the real entry point: success and error paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from datakit.cli.main import main
from datakit.manifest import read_stage_info


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run `datakit ARGS`; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def make_folder(folder: Path, captions: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, text in captions.items():
        Image.new("RGB", (24, 24), "white").save(folder / f"{stem}.png")
        if text is not None:
            (folder / f"{stem}.txt").write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def data(tmp_path) -> Path:
    return make_folder(tmp_path / "in", {
        "a": "1girl, solo, long_hair, white_background, smile",
        "b": "1girl, solo, short hair, outdoors, 猫耳",
        "c": "1girl, solo, " + ", ".join(f"extra tag {i}" for i in range(40)),
    })


@pytest.fixture
def rules(tmp_path) -> Path:
    p = tmp_path / "rules.toml"
    p.write_text('trigger = "sail_kun"\nremove = ["*_background"]\n', encoding="utf-8")
    return p


# -- rewrite ----------------------------------------------------------------------------------------

def test_rewrite_success_and_json(capsys, tmp_path, data, rules):
    code, out, err = cli(capsys, "tags", "rewrite", data, tmp_path / "out", "--rules", rules, "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["stage"] == "tags" and info["counts"]["out"] == 3
    assert (tmp_path / "out" / "a.txt").read_text() == "sail_kun, 1girl, solo, long hair, smile"
    assert read_stage_info(tmp_path / "out")["carry"]["keep_tokens"] == 1


def test_rewrite_flags_override_rules_file(capsys, tmp_path, data, rules):
    code, _, err = cli(capsys, "tags", "rewrite", data, tmp_path / "out", "-r", rules, "--trigger", "mascot",
                       "--underscores", "--escape", "--order", "alphabetical", "--max-tags", "4", "-q")
    assert code == 0, err
    assert (tmp_path / "out" / "a.txt").read_text() == "mascot, 1girl, solo, long_hair"
    assert read_stage_info(tmp_path / "out")["carry"]["trigger"] == "mascot"


def test_rewrite_without_rules_only_normalises(capsys, tmp_path, data):
    code, _, err = cli(capsys, "tags", "rewrite", data, tmp_path / "out", "-q")
    assert code == 0, err
    assert (tmp_path / "out" / "a.txt").read_text() == "1girl, solo, long hair, white background, smile"
    assert "trigger" not in read_stage_info(tmp_path / "out")["carry"]


def test_rewrite_dry_run(capsys, tmp_path, data, rules):
    code, out, err = cli(capsys, "tags", "rewrite", data, tmp_path / "out", "-r", rules, "--dry-run")
    assert code == 0, err
    assert "- white_background" in out and "+ sail_kun" in out and "nothing was written" in out
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--rules", "missing.toml"], "rules file not found"),
        (["--trigger", "a, b"], "(from --trigger) contains a comma"),
        (["--order", "random"], "Invalid value for '--order'"),
        (["--bogus"], "No such option: --bogus"),
    ],
)
def test_rewrite_usage_errors(capsys, tmp_path, data, extra, message):
    code, out, err = cli(capsys, "tags", "rewrite", data, tmp_path / "out", *extra)
    assert code == 2
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_rewrite_bad_rules_file(capsys, tmp_path, data):
    bad = tmp_path / "bad.toml"
    bad.write_text('trigger = "x"\nremoev = ["a"]\n')
    code, _, err = cli(capsys, "tags", "rewrite", data, tmp_path / "out", "--rules", bad)
    assert code == 2 and "line 2" in err and "did you mean `remove`" in err
    code, _, err = cli(capsys, "tags", "rewrite", tmp_path / "nope", tmp_path / "out")
    assert code == 2 and "does not exist" in err


def test_rewrite_skipped_input_exit_code(capsys, tmp_path, data):
    (data / "junk.png").write_bytes(b"junk")
    code, _, err = cli(capsys, "tags", "rewrite", data, tmp_path / "out")
    assert code == 3 and "junk.png" in err


# -- stats ------------------------------------------------------------------------------------------

def tiny_clip_tokenizer(folder: Path) -> Path:
    """A byte-level BPE vocabulary in CLIP's format: 256 byte symbols (+ `</w>`), a few merges."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    symbols = [chr(c) for c in cs]
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": 256 + i for i, s in enumerate(symbols)})
    merges = ["s o", "so l", "sol o</w>"]  # `solo` becomes one token
    vocab.update({"so": 512, "sol": 513, "solo</w>": 514, "<|startoftext|>": 515, "<|endoftext|>": 516})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder


def test_stats_prints_and_writes(capsys, tmp_path, data):
    before = sorted(p.name for p in data.iterdir())
    code, out, err = cli(capsys, "tags", "stats", data, "--out", tmp_path / "stats", "--top", "5",
                         "--tokenizer", "none")
    assert code == 0, err
    assert "1girl" in out and "in every image" in out and "1girl, solo" in out
    assert "estimate" in out and "1 caption(s) over the 75-token window" in out
    assert sorted(p.name for p in data.iterdir()) == before  # nothing written into IN
    csv = (tmp_path / "stats" / "tag_frequency.csv").read_text().splitlines()
    assert csv[0] == "tag,images,share" and csv[1].startswith("1girl,3,")
    assert "猫耳,1," in "\n".join(csv)
    assert (tmp_path / "stats" / "top_tags.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    caps = (tmp_path / "stats" / "captions.csv").read_text()
    assert caps.splitlines()[0] == "file,caption,tags,clip_tokens,over_window"
    summary = json.loads((tmp_path / "stats" / "stats.json").read_text())
    assert summary["in_every_image"] == ["1girl", "solo"] and summary["clip_tokens"]["exact"] is False


def test_stats_exact_tokens_with_tokenizer_folder(capsys, tmp_path):
    folder = make_folder(tmp_path / "in", {"a": "solo, ab", "b": "solo"})
    tok = tiny_clip_tokenizer(tmp_path / "tok")
    code, out, err = cli(capsys, "tags", "stats", folder, "--tokenizer", tok, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["clip_tokens"]["exact"] is True
    # `solo` is one merged token; `,` one; `ab` two byte tokens (a, b</w>)
    assert summary["clip_tokens"]["max"] == 4 and summary["clip_tokens"]["mean"] == 2.5


@pytest.mark.parametrize(
    "extra,code,message",
    [
        (["--out", "IN/sub"], 2, "never writes into IN"),
        (["--tokenizer", "DIR_WITHOUT_VOCAB"], 4, "missing vocab.json"),
        (["--tokenizer", "nobody/no-such-tokenizer"], 4, "not in the Hugging Face cache"),
        (["--top", "0"], 2, "Invalid value for '--top'"),
    ],
)
def test_stats_errors(capsys, tmp_path, data, extra, code, message):
    (tmp_path / "DIR_WITHOUT_VOCAB").mkdir()
    extra = [e.replace("IN", str(data)).replace("DIR_WITHOUT_VOCAB", str(tmp_path / "DIR_WITHOUT_VOCAB")) for e in extra]
    got, _, err = cli(capsys, "tags", "stats", data, *extra)
    assert got == code and message in err and err.startswith("error: ")


def test_stats_missing_input(capsys, tmp_path):
    code, _, err = cli(capsys, "tags", "stats", tmp_path / "missing")
    assert code == 2 and "does not exist" in err


# -- diff -------------------------------------------------------------------------------------------

def test_diff_reports_added_removed_and_totals(capsys, tmp_path, data, rules):
    out_dir = tmp_path / "out"
    assert cli(capsys, "tags", "rewrite", data, out_dir, "-r", rules, "-q")[0] == 0
    (data / "only_a.txt").write_text("x")
    code, out, err = cli(capsys, "tags", "diff", data, out_dir)
    assert code == 0, err
    assert "a.txt" in out and "- white_background" in out and "+ sail_kun" in out
    assert "only in A: only_a.txt" in out
    assert "3 caption(s) compared: 3 changed" in out
    code, out, _ = cli(capsys, "tags", "diff", data, out_dir, "--json")
    doc = json.loads(out)
    assert doc["tags_added"] == 3 and doc["tags_removed"] == 1 and doc["only_in_a"] == ["only_a.txt"]
    assert doc["most_added"] == [["sail_kun", 3]]


def test_diff_spelling_is_not_a_change(capsys, tmp_path):
    a = make_folder(tmp_path / "a", {"x": "long_hair, Blue_Eyes"})
    b = make_folder(tmp_path / "b", {"x": "blue eyes, long hair"})
    code, out, _ = cli(capsys, "tags", "diff", a, b, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["changed"] == 0 and doc["reordered_only"] == 1


def test_diff_errors(capsys, tmp_path, data):
    code, _, err = cli(capsys, "tags", "diff", data, tmp_path / "missing")
    assert code == 2 and "does not exist" in err
    (tmp_path / "e1").mkdir()
    (tmp_path / "e2").mkdir()
    code, _, err = cli(capsys, "tags", "diff", tmp_path / "e1", tmp_path / "e2")
    assert code == 2 and "no captions" in err
    code, _, err = cli(capsys, "tags", "diff", data)
    assert code == 2 and "Missing argument" in err


def test_help_lists_subcommands(capsys):
    code, out, _ = cli(capsys, "tags", "--help")
    assert code == 0 and all(c in out for c in ("rewrite", "stats", "diff"))
    code, out, _ = cli(capsys, "tags", "rewrite", "--help")
    assert code == 0 and "--dry-run" in out and "--rules" in out


def test_token_counter_auto_env_and_estimate(tmp_path, monkeypatch):
    from datakit.tags.tokens import estimate_tokens, token_counter

    tok = tiny_clip_tokenizer(tmp_path / "tok")
    monkeypatch.setenv("DATAKIT_CLIP_TOKENIZER", str(tok))
    counter = token_counter("auto")
    assert counter.exact and counter.count("solo") == 1
    monkeypatch.delenv("DATAKIT_CLIP_TOKENIZER")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    counter = token_counter("auto")
    assert not counter.exact and "estimate" in counter.description
    # one token per word or punctuation mark, digits one each, long words a little more
    assert estimate_tokens("1girl, long hair") == 5
    assert estimate_tokens("") == 0
    assert estimate_tokens("neckerchief") > estimate_tokens("neck")
