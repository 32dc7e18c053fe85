"""evaluate(): draw every scene x seed with the base model and each adapter, measure, summarise.

This is the whole measurement with an already-loaded pipeline, callable from the eval stage and
from a trainer (`datakit train --eval-every`): the stage adds files, reuse and reports around it.

    result = evaluate(pipe, [NetworkAdapter(net, "step-400", "sks")], scenes, seeds=[0, 1],
                      options=SamplingOptions(steps=20), clip=clip, cutouts=cutouts)
    later = evaluate(pipe, [...], scenes, seeds=[0, 1], options=..., reference=result)  # base not redrawn

Models: one base-model reference per trigger word (the base model alone, prompted with that
trigger), then each adapter. Overall figures are over the scene prompts; the plain prompt (the
trigger alone) has its own row and is left out of them, since it asks for no background at all.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from datakit.errors import UsageError
from datakit.evaluate.sampling import SampleRequest, SamplingOptions, generate
from datakit.evaluate.scenes import EvalScene
from datakit.evaluate.scoring import SampleScore, Scorer, pair_with_reference

BASE = "base"
NOT_MEASURED = "not measured"
# Report columns, in order: the rates (0..1) and the mean similarity.
METRICS = ("white_rate", "plain_rate", "scene_agreement", "subject_presence", "subject_similarity",
           "subject_presence_colour")


@dataclass(frozen=True)
class EvalModel:
    """One model of the comparison: the base reference for a trigger, or an adapter."""

    label: str
    kind: str  # base | lora | hypernetwork | network
    trigger: str
    reference: str | None  # label of the base model it is compared with; None for a base model
    path: str | None = None


@dataclass
class MetricRow:
    """One model over one scene (or over all scene prompts: scene "scenes"): sample count and rates."""

    model: str
    kind: str
    scene: str
    samples: int
    white_rate: float | None
    plain_rate: float | None
    scene_agreement: float | None
    subject_presence: float | None
    subject_similarity: float | None
    subject_presence_colour: float | None


@dataclass
class EvalResult:
    """The measurement: models, scenes, seeds, every sample's scores, rows per model x scene, overall rows."""

    models: list[EvalModel]
    scenes: list[EvalScene]
    seeds: list[int]
    samples: list[SampleScore]
    rows: list[MetricRow]
    overall: list[MetricRow]
    not_measured: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "models": [asdict(m) for m in self.models],
            "scenes": [{"name": s.name, "text": s.text} for s in self.scenes],
            "seeds": list(self.seeds),
            "overall": [asdict(r) for r in self.overall],
            "rows": [asdict(r) for r in self.rows],
            "samples": [asdict(s) for s in self.samples],
            "not_measured": dict(self.not_measured),
        }


def plan_models(adapters: list) -> list[EvalModel]:
    """The base reference(s) and the adapters, in the order they are drawn and reported."""
    triggers: list[str] = []
    for a in adapters:
        if not a.trigger:
            raise UsageError(f"{a.label}: no trigger word (the file names none); give --trigger WORD")
        if a.trigger not in triggers:
            triggers.append(a.trigger)
    base_of = {t: BASE if len(triggers) == 1 else f"{BASE} [{t}]" for t in triggers}
    models = [EvalModel(base_of[t], BASE, t, None) for t in triggers]
    labels = {m.label for m in models}
    for a in adapters:
        if a.label in labels:
            raise UsageError(f"two models would both be called {a.label!r}: rename one adapter file")
        labels.add(a.label)
        models.append(EvalModel(a.label, a.kind, a.trigger, base_of[a.trigger], str(getattr(a, "path", "")) or None))
    return models


def sample_key(model: str, scene: str, seed: int) -> str:
    """The unique key of one sample."""
    return f"{model}/{scene}/s{seed}"


def requests_for(model: EvalModel, scenes: list[EvalScene], seeds: list[int]) -> list[tuple[EvalScene, SampleRequest]]:
    """Every scene x seed of one model."""
    return [(scene, SampleRequest(sample_key(model.label, scene.name, seed), scene.prompt(model.trigger), seed))
            for scene in scenes for seed in seeds]


def evaluate(pipe, adapters: list, scenes: list[EvalScene], seeds: list[int], *, options: SamplingOptions,
             clip=None, cutouts: list[np.ndarray] | None = None, reference: EvalResult | None = None,
             existing: Callable[[str], np.ndarray | None] | None = None,
             on_sample: Callable[[EvalModel, EvalScene, SampleRequest, np.ndarray, bool], None] | None = None,
             on_batch: Callable[[int], None] | None = None) -> EvalResult:
    """Draw and measure every model x scene x seed; see the module docstring.

    reference: an earlier result whose base-model samples are reused (not drawn again).
    existing(key): an image already drawn for that sample (the stage's unchanged files), or None.
    on_sample(model, scene, request, image, fresh): called for every image (fresh: drawn just now).
    """
    models = plan_models(adapters)
    by_label = {a.label: a for a in adapters}
    scorer = Scorer(scenes, clip=clip, cutouts=cutouts)
    scores: list[SampleScore] = []
    reused_base = {(s.model, s.scene, s.seed): s for s in (reference.samples if reference else [])
                   if any(m.label == s.model and m.kind == BASE for m in reference.models)}
    for model in models:
        todo = []
        for scene, req in requests_for(model, scenes, seeds):
            old = reused_base.get((model.label, scene.name, req.seed)) if model.kind == BASE else None
            if old is not None:
                scores.append(old)
                continue
            image = existing(req.key) if existing is not None else None
            if image is not None:
                scores.append(_measure(scorer, model, scene, req, image))
                if on_sample is not None:
                    on_sample(model, scene, req, image, False)
            else:
                todo.append((scene, req))
        if not todo:
            continue
        if pipe is None:
            raise UsageError("internal: samples to draw but no pipeline loaded")
        scene_of = {req.key: scene for scene, req in todo}
        with _switched(pipe, adapters, by_label.get(model.label)):
            for req, image in generate(pipe, [req for _, req in todo], options, on_batch=on_batch):
                scene = scene_of[req.key]
                scores.append(_measure(scorer, model, scene, req, image))
                if on_sample is not None:
                    on_sample(model, scene, req, image, True)
    scorer.flush()
    pair_with_reference(scores, {m.label: m.reference for m in models if m.reference})
    order = {sample_key(m.label, sc.name, sd): i for i, (m, sc, sd) in
             enumerate((m, sc, sd) for m in models for sc in scenes for sd in seeds)}
    scores.sort(key=lambda s: order[sample_key(s.model, s.scene, s.seed)])
    rows, overall = summarise(scores, models, scenes)
    return EvalResult(models, list(scenes), list(seeds), scores, rows, overall, not_measured(clip, cutouts, scenes))


@contextlib.contextmanager
def _switched(pipe, adapters: list, active):
    """Every adapter off except `active` (None: the base model alone)."""
    with contextlib.ExitStack() as stack:
        for a in adapters:
            if a is not active:
                stack.enter_context(a.removed(pipe))
        if active is not None:
            stack.enter_context(active.applied(pipe))
        yield


def _measure(scorer: Scorer, model: EvalModel, scene: EvalScene, req: SampleRequest, image: np.ndarray) -> SampleScore:
    return scorer.add(dict(key=req.key, model=model.label, scene=scene.name, seed=req.seed, prompt=req.prompt), image)


def not_measured(clip, cutouts, scenes: list[EvalScene]) -> dict[str, str]:
    """Why each unmeasured metric is missing (shown in the report instead of a number)."""
    no_clip, no_subject = "no --clip-model or DATAKIT_CLIP_MODEL", "no --subject cut-outs"
    reasons = {}
    if clip is None:
        reasons["scene_agreement"] = no_clip
    elif sum(not s.is_plain for s in scenes) < 2:
        reasons["scene_agreement"] = "fewer than two scenes to tell apart"
    if not cutouts:
        for key in ("subject_presence", "subject_similarity", "subject_presence_colour"):
            reasons[key] = no_subject
    elif clip is None:
        reasons["subject_presence"] = reasons["subject_similarity"] = no_clip
    return reasons


def _rate(values: list) -> float | None:
    kept = [float(v) for v in values if v is not None]
    return round(float(np.mean(kept)), 4) if kept else None


def _row(model: EvalModel, scene: str, group: list[SampleScore]) -> MetricRow:
    return MetricRow(
        model=model.label, kind=model.kind, scene=scene, samples=len(group),
        white_rate=_rate([s.white for s in group]),
        plain_rate=_rate([s.plain for s in group]),
        scene_agreement=_rate([s.scene_agrees for s in group]),
        subject_presence=_rate([s.subject_present for s in group]),
        subject_similarity=_rate([s.subject_similarity for s in group]),
        subject_presence_colour=_rate([s.colour_present for s in group]),
    )


def summarise(scores: list[SampleScore], models: list[EvalModel], scenes: list[EvalScene]) -> tuple[list[MetricRow], list[MetricRow]]:
    """Rows per model x scene, and one row per model over the scene prompts (the plain prompt left out)."""
    rows, overall = [], []
    for model in models:
        mine = [s for s in scores if s.model == model.label]
        for scene in scenes:
            group = [s for s in mine if s.scene == scene.name]
            if group:
                rows.append(_row(model, scene.name, group))
        scene_names = {s.name for s in scenes if not s.is_plain}
        group = [s for s in mine if s.scene in scene_names]
        if group:
            overall.append(_row(model, "scenes", group))
    return rows, overall
