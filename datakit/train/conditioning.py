"""Text conditioning and SDXL micro-conditioning, exactly as the clients that use the adapter at inference compute them.

A LoRA or hypernetwork learns for the conditioning it is trained on, so training feeds the UNet
what AUTOMATIC1111, ComfyUI and diffusers feed it (modules/sd_hijack_clip.py in A1111):

- SD1/SD2, clip skip N (1 = the last layer): CLIP's hidden state N layers from the end, then CLIP's
  final layer norm; for N = 1 that is `last_hidden_state` (kohya's strategy_sd.py agrees).
- SDXL: the penultimate hidden state of both encoders, without the final norm, concatenated on the
  channel axis; `text_embeds` = the second encoder's projected pooled output of the first chunk.
  Clip skip does not apply to SDXL (kohya, A1111 and ComfyUI all use the penultimate layer).
- Prompts longer than 75 tokens (--max-token-length 150/225): A1111's chunks of 75 tokens, each
  wrapped as BOS + 75 + EOS (padded with EOS; with the pad token after the first EOS where the
  tokenizer pads differently, SD2 and SDXL's second), encoded separately and concatenated whole:
  three chunks are 231 positions. A chunk that fills up within 20 tokens after a comma is cut
  after that comma (A1111's comma_padding_backtrack, default 20). A caption needs as many chunks as
  its tokens do, up to max_token_length / 75; in a batch, shorter ones are filled with empty chunks
  (BOS EOS PAD ...), as A1111 fills a batch. kohya trains differently on long captions: it drops the
  inner BOS/EOS pairs and conditions on 227 positions, which no inference client reproduces.
"""

from __future__ import annotations

import torch

COMMA_PADDING_BACKTRACK = 20  # A1111's default setting
CHUNK = 75  # prompt tokens per chunk; with BOS and EOS a chunk is CLIP's 77 positions


def prompt_chunks(tokenizer, caption: str, max_chunks: int) -> list[list[int]]:
    """Token ids of a caption as A1111 chunks them: rows of 77 ids (BOS + 75 + EOS), at most max_chunks rows."""
    ids = tokenizer(caption, add_special_tokens=False, truncation=False)["input_ids"]
    comma = tokenizer.get_vocab().get(",</w>")
    chunks: list[list[int]] = []
    chunk: list[int] = []
    last_comma = -1
    for token in ids:
        if token == comma:
            last_comma = len(chunk)
        elif len(chunk) == CHUNK and last_comma != -1 and len(chunk) - last_comma <= COMMA_PADDING_BACKTRACK:
            # The text after the last comma moves to the next chunk, so no tag is cut in two.
            chunks.append(chunk[: last_comma + 1])
            chunk = chunk[last_comma + 1:]
            last_comma = -1
        if len(chunk) == CHUNK:
            chunks.append(chunk)
            chunk = []
            last_comma = -1
        chunk.append(token)
    if chunk or not chunks:
        chunks.append(chunk)
    return [_wrap(tokenizer, c) for c in chunks[:max_chunks]]


def _wrap(tokenizer, tokens: list[int]) -> list[int]:
    """BOS + tokens + EOS padded to 77 with EOS, then the pad token after the first EOS (SD2-style tokenizers)."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    row = [bos] + tokens + [eos] * (CHUNK + 1 - len(tokens))
    if pad != eos:
        first = row.index(eos)
        row = row[: first + 1] + [pad] * (len(row) - first - 1)
    return row


def empty_chunk(tokenizer) -> list[int]:
    """The chunk of an empty prompt (BOS, EOS, padding): what fills a batch's shorter captions."""
    return _wrap(tokenizer, [])


def _hidden(encoder, ids: torch.Tensor, layer_from_end: int, final_norm: bool):
    out = encoder(ids, output_hidden_states=True, return_dict=True)
    hidden = out.hidden_states[-layer_from_end]
    if final_norm:
        hidden = getattr(encoder, "text_model", encoder).final_layer_norm(hidden)
    return hidden, out


def chunk_count(tokenizers, prompt: str, max_token_length: int) -> int:
    """How many 77-position chunks a prompt is encoded in (the most any of the model's tokenizers needs)."""
    max_chunks = max(1, max_token_length // CHUNK)
    return max(len(prompt_chunks(tok, prompt, max_chunks)) for tok in tokenizers)


def _batch_ids(tokenizer, captions: list[str], max_chunks: int, n: int) -> torch.Tensor:
    """(batch * n, 77) ids with every caption filled to n chunks with the empty chunk."""
    fill = empty_chunk(tokenizer)
    flat = []
    for caption in captions:
        rows = prompt_chunks(tokenizer, caption, max_chunks)
        flat += rows + [fill] * (n - len(rows))
    return torch.tensor(flat, dtype=torch.long)


def encode_prompts(base, captions: list[str], *, clip_skip: int = 1, max_token_length: int = 75,
                   device=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Text conditioning for the UNet: (hidden states (batch, 77 * chunks, width), SDXL pooled embeds or None)."""
    device = device or base.text_encoders[0].device
    max_chunks = max(1, max_token_length // CHUNK)
    b = len(captions)
    n = max(chunk_count(base.tokenizers, c, max_token_length) for c in captions)
    if base.family != "sdxl":
        ids = _batch_ids(base.tokenizers[0], captions, max_chunks, n)
        hidden, _ = _hidden(base.text_encoders[0], ids.to(device), clip_skip, final_norm=True)
        return hidden.reshape(b, n * ids.shape[-1], -1), None
    states, pooled = [], None
    for idx, (enc, tok) in enumerate(zip(base.text_encoders, base.tokenizers)):
        ids = _batch_ids(tok, captions, max_chunks, n)
        hidden, out = _hidden(enc, ids.to(device), 2, final_norm=False)
        states.append(hidden.reshape(b, n * ids.shape[-1], -1))
        if idx == 1:
            embeds = getattr(out, "text_embeds", None)
            if embeds is None:
                from datakit.errors import UsageError

                raise UsageError("SDXL's second text encoder must be a CLIPTextModelWithProjection")
            pooled = embeds.reshape(b, n, -1)[:, 0]
    return torch.cat(states, dim=-1), pooled


def crop_ltrb(bucket: tuple[int, int], image_size: tuple[int, int]) -> tuple[float, float, float, float]:
    """kohya's crop offsets of a bucket resize (train_util.BucketManager.get_crop_ltrb, after Stability AI)."""
    bw, bh = bucket
    image_ar = image_size[0] / image_size[1]
    if bw / bh > image_ar:
        resized_w, resized_h = bh * image_ar, bh
    else:
        resized_w, resized_h = bw, bw / image_ar
    left, top = (bw - resized_w) // 2, (bh - resized_h) // 2
    return left, top, left + resized_w, top + resized_h


def sdxl_time_ids(image_size: tuple[int, int], bucket: tuple[int, int], flipped: bool) -> list[int]:
    """SDXL micro-conditioning of one training image: original (h, w), crop (top, left), target (h, w).

    original = the image's size before the bucket resize; target = the bucket; crop = the offsets of
    the resize into the bucket, mirrored for a flipped image (kohya's train_util __getitem__).
    """
    left, top, right, _ = crop_ltrb(bucket, image_size)
    if flipped:
        left = bucket[0] - right
    return [int(image_size[1]), int(image_size[0]), int(top), int(left), int(bucket[1]), int(bucket[0])]
