"""The prompts eval samples: the trigger word on a list of scenes, plus the plain prompt without one.

Built-in scenes are chosen to be told apart by eye and by CLIP, and to include the hard cases for
the background metrics (a snow field and an overcast sky are bright but are not white backgrounds).

Prompt file format (UTF-8 text, one scene per line; `#` comments and blank lines ignored):

    on a beach, ocean, blue sky
    in a forest, trees | forest
    {trigger} standing in the snow, winter | snow field

Each line is the scene part of the prompt, optionally followed by `| name`. The prompt is
`<trigger>, <scene>`, or the line itself with `{trigger}` replaced when it contains that
placeholder. The scene text without the trigger is what CLIP compares the sample with. The
backgrounds stage's scene files (`prompt | tags [| ground=...]`) are read too: their second field
is taken as tags, not a name, when it holds commas or a third field follows. The plain prompt
(the trigger alone, scene name "plain") is always added: it shows what the adapter draws unasked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from datakit.errors import UsageError

PLAIN = "plain"
TRIGGER_SLOT = "{trigger}"


@dataclass(frozen=True)
class EvalScene:
    """One scene: a short name (file names, table rows), the scene text, and whether it is the plain prompt."""

    name: str
    text: str  # the scene part of the prompt, without the trigger; "" for the plain prompt

    @property
    def is_plain(self) -> bool:
        return not self.text

    def prompt(self, trigger: str) -> str:
        """The full prompt for a trigger word."""
        if not self.text:
            return trigger
        if TRIGGER_SLOT in self.text:
            return self.text.replace(TRIGGER_SLOT, trigger)
        return f"{trigger}, {self.text}"

    def clip_text(self) -> str:
        """What CLIP compares a sample with: the scene without the trigger word."""
        parts = (re.sub(r"\s+", " ", p).strip() for p in self.text.replace(TRIGGER_SLOT, " ").split(","))
        return ", ".join(p for p in parts if p)


BUILTIN_SCENES: tuple[EvalScene, ...] = (
    EvalScene("beach", "on a sunny beach, ocean, blue sky, sand"),
    EvalScene("forest", "in a green forest, trees, foliage"),
    EvalScene("city street", "on a city street, buildings, road, daytime"),
    EvalScene("snow field", "in a snow field, snow, winter, mountains"),
    EvalScene("night sky", "under a starry night sky, stars, night"),
    EvalScene("room", "in a cozy room, indoors, furniture, window"),
    EvalScene("overcast sky", "under an overcast sky, grey clouds, field"),
    EvalScene("desert", "in a desert, sand dunes, blue sky"),
    EvalScene("underwater", "underwater, coral reef, fish, bubbles"),
    EvalScene("flower field", "in a flower field, flowers, grass, sky"),
)


def slug(text: str, words: int = 4) -> str:
    """A short name from a scene text: its first few words."""
    parts = re.findall(r"[^\W_]+", text.replace(TRIGGER_SLOT, " ").lower())
    return " ".join(parts[:words]) or "scene"


def read_scenes_file(path: str | Path) -> list[EvalScene]:
    """Scenes from a prompt file (format in the module docstring); UsageError names the bad line."""
    from datakit.paths import check_name

    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the prompts file {path}: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    scenes: list[EvalScene] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path.name}:{lineno}"
        fields = [f.strip() for f in line.split("|")]
        scene_text = fields[0]
        if not scene_text:
            raise UsageError(f"{where}: the scene text (before '|') is empty")
        if not slug(scene_text, words=1).strip() or scene_text.replace(TRIGGER_SLOT, "").strip(" ,") == "":
            raise UsageError(f"{where}: the scene needs words besides {TRIGGER_SLOT} (the plain prompt is added by itself)")
        name = None
        if len(fields) == 2 and fields[1] and "," not in fields[1]:
            name = check_name(fields[1], "scene name", source=where)
        scenes.append(EvalScene(name or slug(scene_text), scene_text))
    if not scenes:
        raise UsageError(f"{path}: no scenes (every line is blank or a # comment)")
    return scenes


def with_plain(scenes: list[EvalScene] | tuple[EvalScene, ...]) -> list[EvalScene]:
    """The scenes with unique names, followed by the plain prompt (unless a line already is one)."""
    out: list[EvalScene] = []
    taken: set[str] = set()
    for scene in scenes:
        name, n = scene.name, 2
        while name.casefold() in taken or name.casefold() == PLAIN:
            name = f"{scene.name} {n}"
            n += 1
        taken.add(name.casefold())
        out.append(EvalScene(name, scene.text))
    out.append(EvalScene(PLAIN, ""))
    return out
