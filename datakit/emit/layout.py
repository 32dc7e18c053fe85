"""Where items go: `img/<repeats>_<name>/` folders whose repeat counts depend on how many images survive.

Items are written where the plan predicts (every pending image assumed usable) and renamed into the
final folders once the real counts are known; folders a changed repeat count leaves empty are removed.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from datakit.emit.balance import Plan, make_plan
from datakit.emit.concepts import Concept
from datakit.emit.config import EmitConfig
from datakit.imageio import remove_stale_temporaries
from datakit.pool import Task
from datakit.stage import StageRun

ITEM_FOLDERS = ("img", "reg")
# Earlier versions kept a report thumbnail per item here (listed in the manifest): removed on upgrade.
OLD_THUMBS_DIR = ".thumbs"


def subdir(c: Concept, repeats: int) -> str:
    """The concept's folder in OUT: img/<repeats>_<name>, or reg/<repeats>_<class>."""
    return f"{'reg' if c.is_reg else 'img'}/{repeats}_{c.name}"


def plan_for(counts: dict[str, int], concepts: list[Concept], cfg: EmitConfig) -> Plan:
    """The balance plan for these image counts per concept."""
    train = [c for c in concepts if not c.is_reg]
    reg = next((c for c in concepts if c.is_reg), None)
    return make_plan(
        {c.name: max(1, counts.get(c.name, 0)) for c in train},
        {c.name: c.weight for c in train},
        reg=(reg.name, max(1, counts.get(reg.name, 0))) if reg else None,
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        target_steps=cfg.target_steps,
    )


def repeats(plan: Plan) -> dict[str, int]:
    """Repeat count per concept name (the regularisation set included)."""
    r = {c.name: c.repeats for c in plan.concepts}
    if plan.reg:
        r[plan.reg.name] = plan.reg.repeats
    return r


def count_ok(run: StageRun, tasks: list[Task]) -> dict[str, int]:
    """Usable items per concept so far."""
    counts: dict[str, int] = {}
    for t in tasks:
        if run.rows.get(t.key, {}).get("status") == "ok":
            counts[t.params["concept"]] = counts.get(t.params["concept"], 0) + 1
    return counts


def predict_subdirs(run: StageRun, tasks: list[Task], todo: list[Task], concepts: list[Concept], cfg: EmitConfig) -> None:
    """Point each task to do at the folder its concept will most likely end in (every pending item assumed usable)."""
    predicted: dict[str, int] = {}
    for t in tasks:
        row = run.rows.get(t.key)
        if row is None or row.get("status") == "ok":
            predicted[t.params["concept"]] = predicted.get(t.params["concept"], 0) + 1
    guess = repeats(plan_for(predicted, concepts, cfg))
    by_name = {c.name: c for c in concepts}
    for t in todo:
        c = by_name[t.params["concept"]]
        t.payload["subdir"] = subdir(c, guess[c.name])


def final_folders(plan: Plan, concepts: list[Concept]) -> dict[str, str]:
    """Concept name -> its folder in OUT under the plan's repeat counts."""
    by_name = {c.name: c for c in concepts}
    return {name: subdir(by_name[name], r) for name, r in repeats(plan).items()}


def move_into_place(run: StageRun, tasks: list[Task], final: dict[str, str], out: Path) -> set[str]:
    """Rename outputs written (or reused) under another repeat count into the final folders; returns
    the folders that may now be empty."""
    touched: set[str] = set()
    for row in run.old_rows.values():
        for f in row.get("outputs", []):
            touched.add(str(Path(f).parent))
    for t in tasks:
        row = run.rows.get(t.key)
        if not row or row.get("status") != "ok":
            continue
        target = final[t.params["concept"]]
        moved = []
        for f in row["outputs"]:
            parent = str(Path(f).parent)
            if parent == target:
                moved.append(f)
                continue
            touched.add(parent)
            new = f"{target}/{Path(f).name}"
            (out / target).mkdir(parents=True, exist_ok=True)
            os.replace(out / f, out / new)
            moved.append(new)
        if moved != row["outputs"]:
            row = dict(row, outputs=moved, file=moved[0])
            run.rows[t.key] = row
    return touched


def remove_empty_dirs(out: Path, dirs: set[str]) -> None:
    """Drop repeat folders left empty by a changed repeat count (never a folder with files)."""
    # An empty repeat folder holds no data, and kohya's folder mode would count it as a concept.
    swept = {str(p.relative_to(out)) for top in (*ITEM_FOLDERS, OLD_THUMBS_DIR) if (out / top).is_dir()
             for p in (out / top).iterdir()}
    for d in sorted(dirs | swept, key=len, reverse=True):
        for p in (out / d, (out / d).parent):
            if p != out and p.is_dir():
                with contextlib.suppress(OSError):
                    p.rmdir()  # fails, harmlessly, unless empty


def remove_temporaries(out: Path) -> None:
    """StageRun cleans OUT itself; a run killed half-way can also leave temporaries in the item folders."""
    for top in (*ITEM_FOLDERS, OLD_THUMBS_DIR):
        if (out / top).is_dir():
            for sub in (out / top).iterdir():
                remove_stale_temporaries(sub)


def drop_old_thumbnails(run: StageRun) -> bool:
    """Rows of earlier versions list a report thumbnail under OUT/.thumbs/ among their outputs: delete
    those files and take them off the rows (the report now carries its pictures in memory). True when
    there were any, so the manifest gets rewritten."""
    out = run.out
    found = False
    for rows in (run.old_rows, run.rows):
        for key, row in list(rows.items()):
            old = [f for f in row.get("outputs", []) if Path(f).parts[:1] == (OLD_THUMBS_DIR,)]
            if not old and "thumb" not in row:
                continue
            found = True
            for f in old:
                with contextlib.suppress(OSError):
                    (out / f).unlink()
            kept = {k: v for k, v in row.items() if k != "thumb"}
            kept["outputs"] = [f for f in row.get("outputs", []) if f not in old]
            rows[key] = kept
    if found:
        remove_empty_dirs(out, set())
    return found
