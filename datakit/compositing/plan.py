"""Which subject goes on which background: one task per composite, named after both."""

from __future__ import annotations

from datakit.compositing.config import CompositeConfig
from datakit.compositing.horizon import ESTIMATOR_VERSION
from datakit.compositing.placement import assign_framings
from datakit.compositing.sources import Background, Subject
from datakit.paths import MAX_NAME_BYTES, truncate_name
from datakit.pool import Task
from datakit.seeding import item_rng


def slots(backgrounds: list[Background], n_bg: int, k: int, reuse: bool) -> list[tuple[Background, int, bool]]:
    """(background, occurrence, name needs a suffix) for every composite, background by background."""
    chosen = [backgrounds[i % len(backgrounds)] for i in range(n_bg)] if reuse else backgrounds[:n_bg]
    uses: dict[str, int] = {}
    for bg in chosen:
        uses[bg.key] = uses.get(bg.key, 0) + k
    seen: dict[str, int] = {}
    result = []
    for bg in chosen:
        for _ in range(k):
            n = seen.get(bg.key, 0)
            seen[bg.key] = n + 1
            result.append((bg, n, uses[bg.key] > 1))
    return result


def build_tasks(cfg: CompositeConfig, subjects: list[Subject], backgrounds: list[Background], n_bg: int, weights: dict) -> list[Task]:
    """One task per composite; subjects spread evenly over the backgrounds, framings in exact proportion."""
    k = cfg.per_background
    chosen = slots(backgrounds, n_bg, k, cfg.reuse_backgrounds)
    n_slots_bg = len(chosen) // k
    # A seeded shuffle of the backgrounds decides which subject each gets, so a subject does not follow
    # the backgrounds' own order (procedural scenes cycle); the K composites of one background get
    # consecutive subjects, so they differ whenever there are at least K subjects.
    order = item_rng(cfg.seed, "composite:subject-order").permutation(n_slots_bg)
    framings = assign_framings(weights, len(chosen), item_rng(cfg.seed, "composite:framing"))
    tasks = []
    for j, (bg, occurrence, suffix) in enumerate(chosen):
        i, kk = divmod(j, k)
        subj = subjects[(int(order[i]) * k + kk) % len(subjects)]
        tail = f"_k{occurrence}" if suffix else ""
        full = f"{subj.stem}__{bg.stem}{tail}"
        # Two long stems joined pass the file system's 255-byte limit: cut with a hash of the whole
        # name (kept in the manifest row's params), the `_k` suffix kept readable.
        name = truncate_name(f"{subj.stem}__{bg.stem}", max_bytes=MAX_NAME_BYTES - len(tail), key=full) + tail
        long_name = {"full_name": full} if name != full else {}
        framing = framings[j]
        tasks.append(
            Task(
                key=name,
                inputs=[p for p in (subj.path, subj.caption, bg.path, bg.caption) if p is not None],
                params={
                    "subject": subj.key, "background": bg.key, "framing": framing, "bg_tags": bg.tags,
                    "ground_y": bg.ground_y, "ground_known": bg.ground_known,
                    # Folder backgrounds get an estimated ground line: a better estimator redoes them.
                    **({"ground_estimate": ESTIMATOR_VERSION} if bg.ground_source == "none" else {}),
                    **long_name,
                },
                payload={"subject": subj, "background": bg},
                source=f"{subj.key} on {bg.key}",
            )
        )
    return tasks
