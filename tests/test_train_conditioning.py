"""Golden tests: the text conditioning training feeds the UNet equals what the inference clients compute.

Each expectation comes from the reference, never from datakit's own functions:
- diffusers' pipelines (`StableDiffusionPipeline.encode_prompt`, `StableDiffusionXLPipeline.encode_prompt`)
  for prompts within 75 tokens at their default layer (mind the trap: diffusers' `clip_skip=k` is
  kohya's/A1111's clip skip k + 1; with transformers 5 its clip_skip path fails, `text_model` is gone);
- AUTOMATIC1111's modules/sd_hijack_clip.py (FrozenCLIPEmbedderWithCustomWordsBase.tokenize_line,
  empty_chunk, process_tokens, forward; FrozenCLIPEmbedderWithCustomWords.encode_with_transformers),
  re-derived below, for long prompts, SD2-style padding and batches of different lengths.
kohya (library/strategy_sd.py, SdTextEncodingStrategy.encode_tokens) agrees for prompts within 75
tokens and differs for longer ones (227 positions for 225 tokens, not A1111's 231); see docs/train.md.
"""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPTokenizer

from datakit.testing import build_tiny_pipeline, write_tiny_clip_tokenizer
from datakit.train.cache import TextCache
from datakit.train.conditioning import chunk_count, encode_prompts
from datakit.train.model import base_from_pipeline

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHORT = "sks, 1girl, solo, red hair, smile"
# 36 tags of 5-6 tokens each in the tiny char-level vocabulary (208 tokens): three chunks, commas near their ends.
LONG = ", ".join(["sks"] + [f"tag{i}" for i in range(35)])


def _pipe(family: str, sd2_padding: bool = False, seed: int = 0):
    pipe = build_tiny_pipeline(family, seed=seed, trained_text=True)
    if sd2_padding:  # SD2's tokenizer (and SDXL's second) pads with "!" after the end token
        import tempfile

        tok = CLIPTokenizer.from_pretrained(str(write_tiny_clip_tokenizer(tempfile.mkdtemp(), pad_token="!")))
        if family == "sdxl":
            pipe.tokenizer_2 = tok
        else:
            pipe.tokenizer = tok
    return pipe, base_from_pipeline(pipe, name="tiny", family=family)


# ---- A1111's chunking and encoding, re-derived (modules/sd_hijack_clip.py) ---------------------------

def a1111_chunks(tokenizer, text: str, backtrack: int = 20) -> list[list[int]]:
    """FrozenCLIPEmbedderWithCustomWordsBase.tokenize_line (no emphasis, no embeddings) + process_tokens' padding."""
    tokens = tokenizer([text], truncation=False, add_special_tokens=False)["input_ids"][0]
    comma = tokenizer.get_vocab().get(",</w>")
    start, end = tokenizer.bos_token_id, tokenizer.eos_token_id
    chunks, chunk, last_comma = [], [], -1

    def next_chunk():
        nonlocal chunk, last_comma
        padded = chunk + [end] * (75 - len(chunk))
        chunks.append([start] + padded + [end])
        chunk, last_comma = [], -1

    for token in tokens:
        if token == comma:
            last_comma = len(chunk)
        elif backtrack != 0 and len(chunk) == 75 and last_comma != -1 and len(chunk) - last_comma <= backtrack:
            reloc = chunk[last_comma + 1:]
            chunk = chunk[: last_comma + 1]
            next_chunk()
            chunk = reloc
        if len(chunk) == 75:
            next_chunk()
        chunk.append(token)
    if chunk or not chunks:
        next_chunk()
    return chunks


def a1111_pad(tokenizer, rows: list[list[int]]) -> torch.Tensor:
    """process_tokens: with a pad token other than the end token (SD2), everything after the first end token is pad."""
    ids = torch.tensor(rows)
    pad = tokenizer.pad_token_id
    if pad != tokenizer.eos_token_id:
        for r, row in enumerate(rows):
            ids[r, row.index(tokenizer.eos_token_id) + 1:] = pad
    return ids


def a1111_encode(pipe, texts: list[str], clip_skip: int) -> torch.Tensor:
    """forward(): chunk every text, fill the batch with empty chunks, encode chunk by chunk, concatenate."""
    tok, enc = pipe.tokenizer, pipe.text_encoder
    per_text = [a1111_chunks(tok, t) for t in texts]
    empty = [tok.bos_token_id] + [tok.eos_token_id] * 76  # empty_chunk()
    zs = []
    for i in range(max(len(c) for c in per_text)):
        rows = [c[i] if i < len(c) else empty for c in per_text]
        out = enc(a1111_pad(tok, rows), output_hidden_states=True)
        # encode_with_transformers: hidden state -clip_skip through the final layer norm, else last_hidden_state
        norm = getattr(enc, "text_model", enc).final_layer_norm  # transformers 5 drops `text_model.`
        z = norm(out.hidden_states[-clip_skip]) if clip_skip > 1 else out.last_hidden_state
        zs.append(z)
    return torch.cat(zs, dim=1)


# ---- SD1 / SD2 ---------------------------------------------------------------------------------------

@torch.no_grad()
@pytest.mark.parametrize("family,sd2_padding", [("sd1", False), ("sd2", True)])
@pytest.mark.parametrize("clip_skip", [1, 2])
def test_short_prompt_equals_the_clients(family, sd2_padding, clip_skip):
    pipe, base = _pipe(family, sd2_padding)
    ours, pooled = encode_prompts(base, [SHORT], clip_skip=clip_skip)
    assert pooled is None and ours.shape == (1, 77, 32)
    torch.testing.assert_close(ours, a1111_encode(pipe, [SHORT], clip_skip), rtol=0, atol=1e-5)
    if clip_skip == 1:  # diffusers' own inference encoding (clip_skip=None: the normed last layer)
        torch.testing.assert_close(ours, pipe.encode_prompt(SHORT, "cpu", 1, False)[0], rtol=0, atol=1e-5)
    # the final layer norm is applied for clip skip 1 too: the pre-norm state is something else entirely
    ids = pipe.tokenizer(SHORT, padding="max_length", max_length=77, return_tensors="pt").input_ids
    pre_norm = pipe.text_encoder(ids, output_hidden_states=True).hidden_states[-clip_skip]
    assert (ours - pre_norm).abs().mean() > 0.3


@torch.no_grad()
@pytest.mark.parametrize("family,sd2_padding", [("sd1", False), ("sd2", True)])
@pytest.mark.parametrize("clip_skip", [1, 2])
def test_long_prompt_is_a1111_chunks_231_positions(family, sd2_padding, clip_skip):
    pipe, base = _pipe(family, sd2_padding)
    chunks = a1111_chunks(pipe.tokenizer, LONG)
    assert len(chunks) == 3  # the prompt needs three chunks ...
    assert chunks != a1111_chunks(pipe.tokenizer, LONG, backtrack=0)  # ... and one was cut after a comma
    ours, _ = encode_prompts(base, [LONG], clip_skip=clip_skip, max_token_length=225)
    ref = a1111_encode(pipe, [LONG], clip_skip)
    assert ours.shape == ref.shape == (1, 231, 32)  # whole 77-position chunks (kohya would give 227)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    # --max-token-length 150 keeps the first two chunks, exactly
    two, _ = encode_prompts(base, [LONG], clip_skip=clip_skip, max_token_length=150)
    torch.testing.assert_close(two, ref[:, :154], rtol=0, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("family,sd2_padding", [("sd1", False), ("sd2", True)])
def test_batch_of_different_lengths_is_filled_with_empty_chunks(family, sd2_padding):
    pipe, base = _pipe(family, sd2_padding)
    texts = [SHORT, LONG, ""]
    ours, _ = encode_prompts(base, texts, clip_skip=2, max_token_length=225)
    torch.testing.assert_close(ours, a1111_encode(pipe, texts, 2), rtol=0, atol=1e-5)
    # the text cache keeps each prompt at its own length and fills a batch the same way
    cache = TextCache()
    cache.fill(texts, lambda t: encode_prompts(base, t, clip_skip=2, max_token_length=225),
               lambda t: chunk_count(base.tokenizers, t, 225))
    assert [cache.hidden[t].shape[0] for t in texts] == [77, 231, 77]
    hidden, _ = cache.get([SHORT, LONG])
    torch.testing.assert_close(hidden, a1111_encode(pipe, [SHORT, LONG], 2), rtol=0, atol=1e-5)


# ---- SDXL --------------------------------------------------------------------------------------------

@torch.no_grad()
@pytest.mark.parametrize("clip_skip", [1, 2])
def test_sdxl_equals_diffusers_encode_prompt(clip_skip):
    pipe, base = _pipe("sdxl", sd2_padding=True, seed=4)
    ours, pooled = encode_prompts(base, [SHORT], clip_skip=clip_skip)
    # diffusers' SDXL default (clip_skip None): the penultimate state of both encoders, no final norm, and the
    # second encoder's projected pooled output; kohya (strategy_sdxl.py) and A1111 use the same, whatever clip skip
    ref, _, ref_pooled, _ = pipe.encode_prompt(SHORT, prompt_2=SHORT, device="cpu", num_images_per_prompt=1,
                                               do_classifier_free_guidance=False)
    assert ours.shape == (1, 77, 32 + 48) and pooled.shape == (1, 48)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(pooled, ref_pooled, rtol=0, atol=1e-5)


@torch.no_grad()
def test_sdxl_long_prompt_pools_the_first_chunk():
    pipe, base = _pipe("sdxl", sd2_padding=True, seed=4)
    ours, pooled = encode_prompts(base, [LONG], max_token_length=225)
    states = []
    for tok, enc in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)):
        ids = a1111_pad(tok, a1111_chunks(tok, LONG))
        states.append(enc(ids, output_hidden_states=True).hidden_states[-2].reshape(1, -1, enc.config.hidden_size))
    ref = torch.cat(states, dim=-1)
    assert ours.shape == (1, 231, 80)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    first = a1111_pad(pipe.tokenizer_2, a1111_chunks(pipe.tokenizer_2, LONG)[:1])
    torch.testing.assert_close(pooled, pipe.text_encoder_2(first).text_embeds, rtol=0, atol=1e-5)
