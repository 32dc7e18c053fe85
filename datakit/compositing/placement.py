"""Framing mix and placement: how large the subject is and where it stands in each composite.

Geometry is in output pixels. The subject is the cut-out's alpha bounding box; "visible fraction" is the
part of it, from the top, that a framing keeps in frame (all of it for full body, down to the waist for
upper body, head and shoulders for a portrait). Upper-body and portrait crops are cut by the bottom edge
of the frame, as a photographer would frame them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from datakit.errors import UsageError

FRAMINGS = ("full", "upper", "close")
# The Danbooru tag (spaces form) each framing adds to the caption.
FRAMING_TAGS = {"full": "full body", "upper": "upper body", "close": "portrait"}
_FRAMING_ALIASES = {
    "full": "full", "full_body": "full", "full-body": "full", "fullbody": "full", "body": "full",
    "upper": "upper", "upper_body": "upper", "upper-body": "upper", "half": "upper",
    "close": "close", "close-up": "close", "closeup": "close", "close_up": "close", "portrait": "close",
    "face": "close", "head": "close",
}
DEFAULT_FRAMING = {"full": 0.6, "upper": 0.3, "close": 0.1}

# Part of the subject's height below the neck that each crop keeps: a little (head and shoulders) for
# a portrait, to about the waist for upper body. Measured from the neck, so a chibi's big head and a
# tall figure's small one are both framed right.
BELOW_NECK = {"upper": (0.3, 0.45), "close": (0.06, 0.14)}
# Where the neck is when the silhouette does not say (fraction of the height from the top).
DEFAULT_NECK = 0.2
# Share of the frame height the visible part fills, for the crops (full body uses the user's range).
CROP_FILL = {"upper": (0.62, 0.92), "close": (0.72, 0.95)}
# Margin kept between a full-body subject and the frame edges, as a fraction of the frame height.
EDGE_MARGIN = 0.015
# Horizontal truncation allowed for crops, as a fraction of the visible width (never most of it).
CROP_SIDE_TRUNCATION = 0.12


def parse_framing(text: str | dict | None) -> dict[str, float]:
    """`full=0.6,upper=0.3,close=0.1` -> normalised weights; unknown names and bad numbers are usage errors."""
    if text is None or text == "":
        return dict(DEFAULT_FRAMING)
    if isinstance(text, dict):
        pairs = list(text.items())
    else:
        pairs = []
        for chunk in str(text).split(","):
            chunk = chunk.strip()
            if not chunk:
                continue
            if "=" not in chunk:
                raise UsageError(f"--framing: '{chunk}' is not NAME=WEIGHT (e.g. full=0.6,upper=0.3,close=0.1)")
            name, value = chunk.split("=", 1)
            pairs.append((name, value))
    weights = {f: 0.0 for f in FRAMINGS}
    for name, value in pairs:
        key = _FRAMING_ALIASES.get(str(name).strip().lower())
        if key is None:
            raise UsageError(f"--framing: unknown framing '{name}' (use full, upper, close)")
        try:
            w = float(value)
        except (TypeError, ValueError):
            raise UsageError(f"--framing: weight of '{name}' is not a number: '{value}'") from None
        if not math.isfinite(w) or w < 0:
            raise UsageError(f"--framing: weight of '{name}' must be >= 0, got {value}")
        weights[key] += w
    total = sum(weights.values())
    if total <= 0:
        raise UsageError("--framing: at least one framing needs a weight above 0")
    return {k: v / total for k, v in weights.items()}


def parse_range(text: str | tuple | list, *, name: str, lo: float = 0.0, hi: float = 1.0) -> tuple[float, float]:
    """`0.35-0.9` (or `0.35:0.9`, or a pair) -> (0.35, 0.9), checked to lie in [lo, hi]."""
    if isinstance(text, (tuple, list)):
        parts = list(text)
    else:
        s = str(text).strip().replace(":", "-").replace(",", "-")
        parts = [p for p in s.split("-") if p.strip()]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise UsageError(f"{name}: '{text}' is not a range like 0.35-0.9") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not all(math.isfinite(v) for v in values):
        raise UsageError(f"{name}: '{text}' is not a range like 0.35-0.9")
    a, b = sorted(values)
    if a <= lo or b > hi:
        raise UsageError(f"{name}: values must be in ({lo}, {hi}], got {text}")
    return a, b


def assign_framings(weights: dict[str, float], count: int, rng: np.random.Generator) -> list[str]:
    """Exactly proportional framings for `count` composites (largest remainder), in a seeded order."""
    names = [f for f in FRAMINGS if weights.get(f, 0) > 0]
    exact = {f: weights[f] * count for f in names}
    counts = {f: int(math.floor(exact[f])) for f in names}
    leftover = count - sum(counts.values())
    for f in sorted(names, key=lambda f: (-(exact[f] - counts[f]), FRAMINGS.index(f)))[:leftover]:
        counts[f] += 1
    out = [f for f in names for _ in range(counts[f])]
    rng.shuffle(out)
    return out


@dataclass
class SubjectShape:
    """What placement needs to know about a cut-out (its alpha bounding box, in cut-out pixels)."""

    width: int
    height: int
    # Per row: leftmost and rightmost opaque column (-1 for empty rows), for the width of a crop.
    row_left: np.ndarray = field(repr=False)
    row_right: np.ndarray = field(repr=False)
    neck: float = DEFAULT_NECK  # estimated neck line, fraction of the height from the top

    def visible_span(self, fraction: float) -> tuple[int, int]:
        """Leftmost and rightmost opaque columns among the top `fraction` of the rows."""
        rows = max(1, int(round(self.height * fraction)))
        left = self.row_left[:rows]
        right = self.row_right[:rows]
        ok = right >= 0
        if not ok.any():
            return 0, self.width - 1
        return int(left[ok].min()), int(right[ok].max())

    def mirrored(self) -> "SubjectShape":
        """The same shape flipped left-right."""
        w = self.width
        ok = self.row_right >= 0
        left = np.where(ok, w - 1 - self.row_right, -1).astype(np.int32)
        right = np.where(ok, w - 1 - self.row_left, -1).astype(np.int32)
        return SubjectShape(width=w, height=self.height, row_left=left, row_right=right, neck=self.neck)

    def bottom_span(self, fraction: float = 0.06) -> tuple[int, int]:
        """Columns covered by the bottom rows (the feet), for the contact shadow."""
        rows = max(1, int(round(self.height * fraction)))
        left = self.row_left[-rows:]
        right = self.row_right[-rows:]
        ok = right >= 0
        if not ok.any():
            return 0, self.width - 1
        return int(left[ok].min()), int(right[ok].max())


def estimate_neck(alpha: np.ndarray) -> float:
    """The neck line (fraction of the height) from the silhouette: the narrowest run through the body's
    centre column below the widest part of the head. Falls back to DEFAULT_NECK when unclear."""
    mask = alpha >= 128
    h, w = mask.shape
    if h < 16 or not mask.any():
        return DEFAULT_NECK
    xc = int(round(float(np.nonzero(mask)[1].mean())))
    xc = min(max(xc, 0), w - 1)
    # Width of the opaque run that contains the centre column, per row (0 where the column is clear).
    left_part = mask[:, : xc + 1][:, ::-1]
    right_part = mask[:, xc:]
    left = np.where(left_part.all(axis=1), left_part.shape[1], np.argmin(left_part, axis=1))
    right = np.where(right_part.all(axis=1), right_part.shape[1], np.argmin(right_part, axis=1))
    width = np.where(mask[:, xc], left + right - 1, 0).astype(np.float32)
    k = max(1, h // 40)
    width = np.convolve(width, np.ones(k, np.float32) / k, mode="same")
    top = int(0.5 * h)
    head_row = int(np.argmax(width[:top]))
    if width[head_row] <= 0:
        return DEFAULT_NECK
    lo, hi = head_row + 1, min(int(0.65 * h), head_row + int(0.4 * h))
    if hi <= lo:
        return DEFAULT_NECK
    seg = width[lo:hi]
    seg = np.where(seg > 0, seg, np.inf)
    neck_row = lo + int(np.argmin(seg))
    if not np.isfinite(width[neck_row]) or width[neck_row] > 0.85 * width[head_row]:
        return DEFAULT_NECK  # no clear narrowing: not a head-on-shoulders silhouette
    return float(np.clip(neck_row / h, 0.08, 0.6))


def shape_from_alpha(alpha: np.ndarray, threshold: int = 8) -> SubjectShape:
    """Row extents and neck line of an alpha matte already cropped to its bounding box."""
    mask = alpha >= threshold
    h, w = mask.shape
    any_row = mask.any(axis=1)
    left = np.where(any_row, mask.argmax(axis=1), -1)
    right = np.where(any_row, w - 1 - mask[:, ::-1].argmax(axis=1), -1)
    return SubjectShape(
        width=w, height=h, row_left=left.astype(np.int32), row_right=right.astype(np.int32), neck=estimate_neck(alpha)
    )


@dataclass
class Placement:
    """Where and how large the subject is drawn. Centre = centre of the scaled, unrotated subject box."""

    framing: str
    scale: float
    center_x: float
    center_y: float
    visible_fraction: float
    height_fraction: float  # visible subject height / frame height
    rotation: float = 0.0  # degrees, counter-clockwise
    flip: bool = False
    feet_y: float | None = None  # output row of the subject's feet (full body)
    on_ground: bool = False
    notes: list[str] = field(default_factory=list)

    def box(self, shape: SubjectShape) -> tuple[float, float, float, float]:
        """The scaled subject box (x0, y0, x1, y1) in output pixels, before rotation."""
        w, h = shape.width * self.scale, shape.height * self.scale
        return self.center_x - w / 2, self.center_y - h / 2, self.center_x + w / 2, self.center_y + h / 2

    def to_row(self) -> dict:
        row = asdict(self)
        row.pop("notes")
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}


def _rotated_extent(w: float, h: float, degrees: float) -> tuple[float, float]:
    t = math.radians(degrees)
    c, s = abs(math.cos(t)), abs(math.sin(t))
    return w * c + h * s, w * s + h * c


def choose_placement(
    rng: np.random.Generator,
    framing: str,
    shape: SubjectShape,
    out_w: int,
    out_h: int,
    *,
    ground_y: float | None,
    ground_known: bool,
    full_range: tuple[float, float] = (0.35, 0.9),
    max_rotation: float = 0.0,
    flip_probability: float = 0.0,
) -> Placement:
    """Pick scale and position for one composite.

    ground_y: the ground line as a fraction of the frame height (None: no ground or unknown);
    ground_known: False for a plain image folder, where the ground is a guess (the lower part of the frame).
    """
    flip = bool(flip_probability > 0 and rng.random() < flip_probability)
    if flip:
        shape = shape.mirrored()
    rotation = float(rng.uniform(-max_rotation, max_rotation)) if max_rotation > 0 else 0.0
    margin = EDGE_MARGIN * out_h
    notes: list[str] = []

    if framing == "full":
        frac = float(rng.uniform(*full_range))
        scale = frac * out_h / shape.height
        wr, hr = _rotated_extent(shape.width * scale, shape.height * scale, rotation)
        # A wide subject (or a tilted one) must still fit between the side margins.
        limit = min((out_w - 2 * margin) / wr, (out_h - 2 * margin) / hr, 1.0)
        if limit < 1.0:
            scale *= limit
            wr, hr = wr * limit, hr * limit
            notes.append(f"subject scaled to {shape.height * scale / out_h:.2f} of the frame height to fit its width")
        # Feet: on the ground line, or a little in front of it (lower in the frame = nearer the camera).
        if ground_y is not None:
            lo = max(ground_y * out_h, hr + margin)
            hi = out_h - margin
            if lo > hi:
                feet = hi
            else:
                feet = lo + (hi - lo) * float(rng.uniform(0.0, 0.35))
            on_ground = True
        elif not ground_known:
            # A plain image folder: most scenes have their floor in the lower part of the frame.
            lo = max(0.72 * out_h, hr + margin)
            hi = out_h - margin
            feet = hi if lo > hi else float(rng.uniform(lo, hi))
            on_ground = True
        else:
            # No ground (sky, space, underwater): anywhere in the frame.
            lo, hi = hr + margin, out_h - margin
            feet = hi if lo > hi else float(rng.uniform(lo, hi))
            on_ground = False
        cy = feet - hr / 2
        x_lo, x_hi = wr / 2 + margin, out_w - wr / 2 - margin
        cx = out_w / 2 if x_lo >= x_hi else float(rng.uniform(x_lo, x_hi))
        return Placement(
            framing=framing, scale=scale, center_x=cx, center_y=cy, visible_fraction=1.0,
            height_fraction=shape.height * scale / out_h, rotation=rotation, flip=flip,
            feet_y=feet - (hr - shape.height * scale) / 2, on_ground=on_ground, notes=notes,
        )

    # Upper body and portrait: the visible part fills `fill` of the frame, cut by the bottom edge.
    vf = float(np.clip(shape.neck + (1.0 - shape.neck) * rng.uniform(*BELOW_NECK[framing]), 0.1, 0.95))
    fill = float(rng.uniform(*CROP_FILL[framing]))
    scale = fill * out_h / (vf * shape.height)
    left, right = shape.visible_span(vf)
    vis_w = (right - left + 1) * scale
    max_w = out_w * (1 - 2 * EDGE_MARGIN)
    if vis_w > max_w:
        # A wide head/torso: shrink until it fits across the frame.
        shrink = max_w / vis_w
        scale *= shrink
        vis_w *= shrink
        fill *= shrink
        notes.append(f"crop reduced to {fill:.2f} of the frame height to fit its width")
    top = out_h - fill * out_h
    cy = top + shape.height * scale / 2
    # Horizontal: the visible part's centre, allowing a little truncation at the sides.
    spare = CROP_SIDE_TRUNCATION * vis_w
    vis_lo, vis_hi = vis_w / 2 - spare, out_w - vis_w / 2 + spare
    vis_cx = out_w / 2 if vis_lo >= vis_hi else float(rng.uniform(vis_lo, vis_hi))
    # Convert the visible part's centre to the subject box's centre.
    offset = ((left + right + 1) / 2 - shape.width / 2) * scale
    cx = vis_cx - offset
    return Placement(
        framing=framing, scale=scale, center_x=cx, center_y=cy, visible_fraction=vf, height_fraction=fill,
        rotation=rotation, flip=flip, feet_y=None, on_ground=False, notes=notes,
    )
