"""Acceptance: `tags stats --tokenizer DIR` takes a tokenizer saved by transformers 5, whose
save_pretrained writes tokenizer.json only (no vocab.json / merges.txt), e.g. a fine-tuned model
folder a user saved themselves."""

from __future__ import annotations

from transformers import CLIPTokenizer

from datakit.tags.tokens import token_counter
from test_tags_cli import tiny_clip_tokenizer


def test_tokenizer_json_only_folder_counts_exactly(tmp_path):
    bpe = tiny_clip_tokenizer(tmp_path / "bpe")
    saved = tmp_path / "model" / "tokenizer"
    CLIPTokenizer.from_pretrained(str(bpe)).save_pretrained(str(saved))
    (saved / "vocab.json").unlink(missing_ok=True)  # whatever this transformers writes: tokenizer.json alone
    (saved / "merges.txt").unlink(missing_ok=True)
    assert (saved / "tokenizer.json").is_file()
    reference = token_counter(str(bpe))
    for spec in (saved, saved.parent):  # the tokenizer folder, or the model folder holding tokenizer/
        counter = token_counter(str(spec))
        assert counter.exact
        assert counter.count("solo, solo, ab") == reference.count("solo, solo, ab")
