"""Score samples as they are drawn: the pixel metrics at once, the CLIP ones in batches.

Images are not kept: each one is measured when it arrives (white, plain, foreground, colour
match) and queued for CLIP, which embeds a batch of them at a time (scene agreement against the
scene texts, similarity to the subject's cut-outs). The paired subject presence needs the base
model's samples and is filled in at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datakit.evaluate import agreement, palette, plain, subject_clip, subject_colour, white
from datakit.evaluate.border import sides as border_sides
from datakit.evaluate.border import to_lab, work_image
from datakit.evaluate.scenes import EvalScene

CLIP_BATCH = 32


@dataclass
class SampleScore:
    """Everything measured on one sample; None where a metric was not measured or does not apply."""

    key: str
    model: str
    scene: str
    seed: int
    prompt: str
    white: bool
    plain: bool
    has_foreground: bool
    scene_agrees: bool | None = None
    scene_probability: float | None = None
    subject_similarity: float | None = None
    subject_present: bool | None = None  # CLIP, against the base model's sample
    colour_score: float | None = None
    colour_present: bool | None = None
    file: str | None = None


class Scorer:
    """Measures samples for one run: the scenes, the optional CLIP model and the optional subject cut-outs."""

    def __init__(self, scenes: list[EvalScene], *, clip=None, cutouts: list[np.ndarray] | None = None):
        self.clip = clip
        self.scenes = {s.name: i for i, s in enumerate(s for s in scenes if not s.is_plain)}
        self.signature = subject_colour.signature(cutouts) if cutouts else None
        self.scene_emb = self.subject_emb = None
        if clip is not None and len(self.scenes) >= 2:
            self.scene_emb = clip.embed_texts([s.clip_text() for s in scenes if not s.is_plain])
        if clip is not None and cutouts:
            self.subject_emb = clip.embed_images([subject_clip.cutout_for_clip(c) for c in cutouts])
        self._queue: list[tuple[SampleScore, np.ndarray]] = []

    def add(self, score_fields: dict, image: np.ndarray) -> SampleScore:
        """Measure one image (pixel metrics now, CLIP when the batch is full)."""
        lab = to_lab(work_image(image))
        sides = border_sides(lab)
        bg = palette.background_from(lab, sides)
        score = SampleScore(**score_fields, white=white.white_from_sides(sides).white,
                            plain=plain.plain_from_sides(sides).plain, has_foreground=bg.has_foreground)
        if self.signature is not None:
            score.colour_score = subject_colour.colour_score(image, self.signature, bg)
            score.colour_present = score.colour_score >= subject_colour.PRESENT_SCORE
        if self.clip is not None and (self.scene_emb is not None or self.subject_emb is not None):
            self._queue.append((score, image))
            if len(self._queue) >= CLIP_BATCH:
                self.flush()
        return score

    def flush(self) -> None:
        """Embed the queued images with CLIP and fill in their CLIP metrics."""
        if not self._queue:
            return
        scores, images = zip(*self._queue)
        self._queue = []
        emb = self.clip.embed_images(list(images))
        if self.scene_emb is not None:
            rows = [i for i, s in enumerate(scores) if s.scene in self.scenes]
            if rows:
                result = agreement.scene_agreement(emb[rows], self.scene_emb, [self.scenes[scores[i].scene] for i in rows],
                                                   self.clip.logit_scale)
                for j, i in enumerate(rows):
                    scores[i].scene_agrees = bool(result.agrees[j])
                    scores[i].scene_probability = float(result.probability[j])
        if self.subject_emb is not None:
            for s, sim in zip(scores, subject_clip.similarity(emb, self.subject_emb)):
                s.subject_similarity = float(sim)


def pair_with_reference(scores: list[SampleScore], reference_of: dict[str, str]) -> None:
    """Fill subject_present for adapter samples: more like the subject than the reference model's same prompt and seed."""
    by_key = {(s.model, s.scene, s.seed): s for s in scores}
    for s in scores:
        ref_model = reference_of.get(s.model)
        if ref_model is None or s.subject_similarity is None:
            continue
        ref = by_key.get((ref_model, s.scene, s.seed))
        if ref is None or ref.subject_similarity is None:
            continue
        s.subject_present = bool(subject_clip.present_against_reference(
            np.array([s.subject_similarity]), np.array([ref.subject_similarity]), np.array([s.has_foreground]))[0])
