"""scene_agreement: does CLIP see the scene the prompt asked for, rather than one of the other scenes?

Each sample's CLIP image embedding is compared with the text of every scene in the run (the scene
part of the prompt, without the trigger word). The sample agrees when its own scene scores highest;
its probability is the softmax of CLIP's scaled similarities over the scenes (what CLIP zero-shot
classification computes). scene_agreement is the share of samples that agree.

What it can and cannot tell: it is only as good as the CLIP model and only relative to the scenes
in the run (a sample of a beach among {beach, forest} agrees more easily than among ten scenes);
with fewer than two scenes it is not measured. It says nothing about the subject.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Agreement:
    """Per sample: whether its own scene wins, and CLIP's probability for its own scene."""

    agrees: np.ndarray  # bool (n,)
    probability: np.ndarray  # float (n,)


def scene_agreement(image_emb: np.ndarray, scene_emb: np.ndarray, own: np.ndarray, logit_scale: float) -> Agreement:
    """Zero-shot scene classification of samples (rows of image_emb) among the scenes (rows of scene_emb).

    Embeddings are L2-normalised; own[i] is the index of sample i's scene in scene_emb.
    """
    own = np.asarray(own, dtype=int)
    if len(scene_emb) < 2:
        raise ValueError("scene agreement needs at least two scenes")
    logits = logit_scale * (np.asarray(image_emb, np.float64) @ np.asarray(scene_emb, np.float64).T)
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    rows = np.arange(len(own))
    own_p = probs[rows, own]
    # Ties count against the sample: a model that makes every scene look alike does not agree.
    others = np.where(np.arange(probs.shape[1])[None, :] == own[:, None], -np.inf, probs).max(axis=1)
    return Agreement(agrees=own_p > others, probability=own_p)
