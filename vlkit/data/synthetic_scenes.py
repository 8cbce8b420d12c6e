"""Scenes of the synthetic dataset (``vlkit.data.synthetic``): sampling, rendering, and the texts.

A scene holds 1-3 shapes (circle, square, triangle; six colors; small or large) on distinct cells
of a 3x3 grid, and no two shapes share both color and kind, so "the red circle" always names one
shape. Every text is generated from its scene. Questions, statements and hypotheses are built so
that their answer depends on the image, not on the wording: the asked shape, or the wanted truth,
is drawn uniformly before the text is chosen, so a text-only model cannot beat the answer prior.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
from PIL import Image, ImageDraw

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (30, 150, 50),
    "blue": (35, 75, 215),
    "yellow": (235, 210, 30),
    "purple": (135, 50, 175),
    "orange": (245, 130, 20),
}
KINDS = ("circle", "square", "triangle")
SIZES = ("small", "large")
POSITIONS = ("top left", "top", "top right", "left", "middle", "right", "bottom left", "bottom", "bottom right")
COUNTS = ("1", "2", "3")
YES_NO = ("yes", "no")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six")
MAX_SHAPES = 3
BACKGROUND = (124, 116, 104)
"""The ImageNet mean: after normalisation the background is near 0, so the shapes dominate the
patch embeddings (on a light background a tiny model learned MLM from text alone and ITM stayed
at chance for 600 steps; on this one ITM alone reaches 0.78 in 400)."""
NOISE_STD = 5.0
JPEG_QUALITY = 90
RADIUS = {"small": 0.24, "large": 0.42}
"""Shape radius as a fraction of a grid cell's side."""
ANSWERS = (*COLORS, *KINDS, *COUNTS, *YES_NO, *SIZES, *POSITIONS)
"""Every VQA answer, in label order."""


@dataclass(frozen=True)
class Shape:
    """One shape: its kind, color, size and grid cell (0 top left .. 8 bottom right)."""

    kind: str
    color: str
    size: str
    cell: int

    @property
    def position(self) -> str:
        return POSITIONS[self.cell]

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "color": self.color, "size": self.size, "position": self.position, "cell": self.cell}


@dataclass(frozen=True)
class Scene:
    """The shapes of one image, in grid reading order."""

    shapes: tuple[Shape, ...]

    def find(self, color: str, kind: str) -> Optional[Shape]:
        """The shape of ``color`` and ``kind``, if any (there is at most one)."""
        return next((s for s in self.shapes if s.color == color and s.kind == kind), None)

    def has_color(self, color: str) -> bool:
        return any(s.color == color for s in self.shapes)

    def has_kind(self, kind: str) -> bool:
        return any(s.kind == kind for s in self.shapes)


@dataclass(frozen=True)
class QA:
    """A VQA question, its true answer and the answers of its type (for annotator noise)."""

    question: str
    answer: str
    choices: tuple[str, ...]


@dataclass(frozen=True)
class Statement:
    """An NLVR2 statement and its truth function of (left scene, right scene)."""

    text: str
    holds: Callable[[Scene, Scene], bool]


def _pick(rng: np.random.Generator, items: tuple | list):
    return items[int(rng.integers(len(items)))]


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def where(position: str) -> str:
    """The phrase locating ``position``: "at the top left", "on the left", "in the middle"."""
    if position == "middle":
        return "in the middle"
    return f"on the {position}" if position in ("left", "right") else f"at the {position}"


def plural(count: int, noun: str) -> str:
    """``"one shape"``, ``"two shapes"``."""
    return f"{NUMBER_WORDS[count]} {noun}{'' if count == 1 else 's'}"


def join(parts: list[str]) -> str:
    """``"a, b and c"``."""
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"


def noun_phrase(shape: Shape, size: bool = True, color: bool = True) -> str:
    """``"a large red circle"``, with size and color optional."""
    words = [w for w, keep in ((shape.size, size), (shape.color, color), (shape.kind, True)) if keep]
    return f"{article(words[0])} {' '.join(words)}"


def _absent_combo(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    combos = [(c, k) for c in COLORS for k in KINDS if scene.find(c, k) is None]
    return _pick(rng, combos)


# --- sampling and rendering ---


def sample_scene(rng: np.random.Generator) -> Scene:
    """1-3 shapes of distinct (color, kind) on distinct cells, sizes uniform."""
    count = int(rng.integers(1, MAX_SHAPES + 1))
    cells = np.sort(rng.choice(len(POSITIONS), size=count, replace=False))
    combos = rng.choice(len(COLORS) * len(KINDS), size=count, replace=False)
    colors = list(COLORS)
    return Scene(tuple(
        Shape(KINDS[combo // len(colors)], colors[combo % len(colors)], _pick(rng, SIZES), int(cell))
        for cell, combo in zip(cells, combos)
    ))


def shape_geometry(shape: Shape, image_size: int) -> tuple[float, float, float]:
    """Centre x, centre y and radius of ``shape`` in pixels."""
    cell = image_size / 3
    row, col = divmod(shape.cell, 3)
    return (col + 0.5) * cell, (row + 0.5) * cell, RADIUS[shape.size] * cell


def shape_box(shape: Shape, image_size: int) -> tuple[int, int, int, int]:
    """Integer bounding box ``(x, y, width, height)`` of ``shape``."""
    cx, cy, r = shape_geometry(shape, image_size)
    x, y = int(round(cx - r)), int(round(cy - r))
    return x, y, int(round(cx + r)) - x, int(round(cy + r)) - y


def _draw_shape(draw: ImageDraw.ImageDraw, shape: Shape, image_size: int) -> None:
    draw_kind(draw, shape.kind, COLORS[shape.color], *shape_geometry(shape, image_size))


def draw_kind(draw: ImageDraw.ImageDraw, kind: str, fill: tuple[int, int, int], cx: float, cy: float, r: float) -> None:
    """Draw a ``kind`` shape of radius ``r`` centred on (cx, cy)."""
    if kind == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif kind == "square":
        half = 0.85 * r
        draw.rectangle((cx - half, cy - half, cx + half, cy + half), fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx + r, cy + 0.8 * r), (cx - r, cy + 0.8 * r)], fill=fill)


def render(scene: Scene, image_size: int, rng: np.random.Generator) -> bytes:
    """JPEG bytes of ``scene`` drawn on a mid-gray background with Gaussian pixel noise."""
    image = Image.new("RGB", (image_size, image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        _draw_shape(draw, shape, image_size)
    return noisy_jpeg(image, rng)


def noisy_jpeg(image: Image.Image, rng: np.random.Generator) -> bytes:
    """JPEG bytes of a square RGB ``image`` with Gaussian pixel noise added."""
    image_size = image.size[0]
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0.0, NOISE_STD, (image_size, image_size, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


# --- captions ---


def _shuffled(scene: Scene, rng: np.random.Generator) -> list[Shape]:
    return [scene.shapes[i] for i in rng.permutation(len(scene.shapes))]


def _caption_full(scene: Scene, rng: np.random.Generator) -> str:
    return join([f"{noun_phrase(s)} {where(s.position)}" for s in _shuffled(scene, rng)])


def _caption_count(scene: Scene, rng: np.random.Generator) -> str:
    shapes = join([noun_phrase(s, size=False) for s in _shuffled(scene, rng)])
    return f"{plural(len(scene.shapes), 'shape')} on a gray background, {shapes}"


def _caption_colors(scene: Scene, rng: np.random.Generator) -> str:
    return "a picture of " + join([f"{article(s.color)} {s.color} shape" for s in _shuffled(scene, rng)])


def _caption_kinds(scene: Scene, rng: np.random.Generator) -> str:
    return "a drawing of " + join([noun_phrase(s, color=False) for s in _shuffled(scene, rng)])


def _caption_one(scene: Scene, rng: np.random.Generator) -> str:
    shape, others = _pick(rng, scene.shapes), len(scene.shapes) - 1
    rest = "nothing else" if others == 0 else plural(others, "other shape")
    return f"there is {noun_phrase(shape)} {where(shape.position)} and {rest}"


def _relation(a: Shape, b: Shape) -> str:
    (row_a, col_a), (row_b, col_b) = divmod(a.cell, 3), divmod(b.cell, 3)
    if row_a != row_b:
        return "above" if row_a < row_b else "below"
    return "to the left of" if col_a < col_b else "to the right of"


def _caption_relation(scene: Scene, rng: np.random.Generator) -> str:
    if len(scene.shapes) == 1:
        shape = scene.shapes[0]
        return f"a single {shape.color} {shape.kind} {where(shape.position)}"
    a, b = _shuffled(scene, rng)[:2]
    return f"{noun_phrase(a, size=False)} {_relation(a, b)} {noun_phrase(b, size=False)}"


CAPTION_TEMPLATES = (_caption_full, _caption_count, _caption_colors, _caption_kinds, _caption_one, _caption_relation)


def captions(scene: Scene, rng: np.random.Generator, count: int) -> list[str]:
    """``count`` distinct captions of ``scene``, each from a different template."""
    return [CAPTION_TEMPLATES[i](scene, rng) for i in rng.choice(len(CAPTION_TEMPLATES), size=count, replace=False)]


def region_phrases(shape: Shape) -> list[str]:
    """Two Visual-Genome-style descriptions of one shape's region."""
    return [noun_phrase(shape), f"{shape.color} {shape.kind} {where(shape.position)}"]


# --- VQA questions ---


def _q_color_of_kind(scene: Scene, rng: np.random.Generator) -> Optional[QA]:
    unique = [s for s in scene.shapes if sum(o.kind == s.kind for o in scene.shapes) == 1]
    if not unique:
        return None
    shape = _pick(rng, unique)
    return QA(f"what color is the {shape.kind}?", shape.color, tuple(COLORS))


def _q_kind_at(scene: Scene, rng: np.random.Generator) -> QA:
    shape = _pick(rng, scene.shapes)
    return QA(f"what shape is {where(shape.position)}?", shape.kind, KINDS)


def _q_color_at(scene: Scene, rng: np.random.Generator) -> QA:
    shape = _pick(rng, scene.shapes)
    return QA(f"what color is the shape {where(shape.position)}?", shape.color, tuple(COLORS))


def _q_count(scene: Scene, rng: np.random.Generator) -> QA:
    return QA("how many shapes are there?", str(len(scene.shapes)), COUNTS)


def _q_exists(scene: Scene, rng: np.random.Generator) -> QA:
    if rng.random() < 0.5:
        shape = _pick(rng, scene.shapes)
        color, kind, answer = shape.color, shape.kind, "yes"
    else:
        (color, kind), answer = _absent_combo(scene, rng), "no"
    return QA(f"is there {article(color)} {color} {kind}?", answer, YES_NO)


def _q_size(scene: Scene, rng: np.random.Generator) -> QA:
    shape = _pick(rng, scene.shapes)
    return QA(f"what size is the {shape.color} {shape.kind}?", shape.size, SIZES)


def _q_where(scene: Scene, rng: np.random.Generator) -> QA:
    shape = _pick(rng, scene.shapes)
    return QA(f"where is the {shape.color} {shape.kind}?", shape.position, POSITIONS)


QUESTION_TEMPLATES = (_q_color_of_kind, _q_kind_at, _q_color_at, _q_count, _q_exists, _q_size, _q_where)


def questions(scene: Scene, rng: np.random.Generator, count: int) -> list[QA]:
    """Up to ``count`` questions about ``scene``, each of a different type."""
    asked = []
    for i in rng.permutation(len(QUESTION_TEMPLATES)):
        qa = QUESTION_TEMPLATES[i](scene, rng)
        if qa is not None:
            asked.append(qa)
        if len(asked) == count:
            break
    return asked


def ten_answers(qa: QA, rng: np.random.Generator) -> list[str]:
    """Ten annotator answers: the true one, with 0-2 replaced by a wrong answer of the same type."""
    answers = [qa.answer] * 10
    wrong = [a for a in qa.choices if a != qa.answer]
    for slot in rng.choice(10, size=int(rng.choice(3, p=[0.5, 0.3, 0.2])), replace=False):
        answers[slot] = _pick(rng, wrong)
    return answers


# --- NLVR2 statements (left = image_0, right = image_1) ---


def _sides(rng: np.random.Generator) -> tuple[str, int]:
    side = int(rng.integers(2))
    return ("left", "right")[side], side


def _s_more(rng: np.random.Generator) -> Statement:
    name, side = _sides(rng)
    other = "right" if side == 0 else "left"
    return Statement(
        f"the {name} image has more shapes than the {other} image",
        lambda *pair: len(pair[side].shapes) > len(pair[1 - side].shapes),
    )


def _s_same(rng: np.random.Generator) -> Statement:
    return Statement("both images have the same number of shapes", lambda a, b: len(a.shapes) == len(b.shapes))


def _s_both_color(rng: np.random.Generator) -> Statement:
    color = _pick(rng, tuple(COLORS))
    return Statement(
        f"both images contain {article(color)} {color} shape", lambda a, b: a.has_color(color) and b.has_color(color)
    )


def _s_one_color(rng: np.random.Generator) -> Statement:
    color = _pick(rng, tuple(COLORS))
    return Statement(
        f"exactly one of the images contains {article(color)} {color} shape",
        lambda a, b: a.has_color(color) != b.has_color(color),
    )


def _s_kind_in(rng: np.random.Generator) -> Statement:
    kind, (name, side) = _pick(rng, KINDS), _sides(rng)
    return Statement(f"there is a {kind} in the {name} image", lambda *pair: pair[side].has_kind(kind))


def _s_count_in(rng: np.random.Generator) -> Statement:
    count, (name, side) = int(rng.integers(1, MAX_SHAPES + 1)), _sides(rng)
    return Statement(
        f"the {name} image contains exactly {plural(count, 'shape')}", lambda *pair: len(pair[side].shapes) == count
    )


def _s_total(rng: np.random.Generator) -> Statement:
    total = int(rng.integers(2, 2 * MAX_SHAPES + 1))
    return Statement(
        f"there are {NUMBER_WORDS[total]} shapes in total", lambda a, b: len(a.shapes) + len(b.shapes) == total
    )


STATEMENT_TEMPLATES = (_s_more, _s_same, _s_both_color, _s_one_color, _s_kind_in, _s_count_in, _s_total)
PAIR_TRIES = 64
STATEMENT_TRIES = 256


def nlvr2_example(
    scenes: list[Scene], pool: np.ndarray, rng: np.random.Generator
) -> tuple[int, int, str, bool]:
    """``(left image, right image, statement, truth)``: the truth is drawn 50/50 and the statement
    independently of it, then a pair of distinct images of ``pool`` making it so is searched for."""
    truth = bool(rng.random() < 0.5)
    for _ in range(STATEMENT_TRIES):
        statement = STATEMENT_TEMPLATES[int(rng.integers(len(STATEMENT_TEMPLATES)))](rng)
        for _ in range(PAIR_TRIES):
            left, right = (int(i) for i in rng.choice(pool, size=2, replace=False))
            if statement.holds(scenes[left], scenes[right]) == truth:
                return left, right, statement.text, truth
    raise RuntimeError(f"no pair of the {len(pool)} images makes any statement {truth}; use more images")


# --- SNLI-VE hypotheses (0 contradiction, 1 neutral, 2 entailment) ---
# Every hypothesis names one shape by a definite description and states one property of it. The
# label decides only whether that shape is in the image (neutral: it is not, so the image cannot
# settle the claim) and whether the property is its own; every word is drawn from the same
# distribution whatever the label, so the hypothesis alone does not tell the label.


def _other(rng: np.random.Generator, items: tuple, own: str) -> str:
    return _pick(rng, [item for item in items if item != own])


def _property(rng: np.random.Generator, items: tuple, own: Optional[str], label: int) -> str:
    """``own`` (entailment), another of ``items`` (contradiction) or any of them (neutral)."""
    if label == 1:
        return _pick(rng, items)
    return own if label == 2 else _other(rng, items, own)


def _subject(scene: Scene, label: int, rng: np.random.Generator, attribute: str) -> tuple[str, str, Optional[str]]:
    """The colour and kind a hypothesis names, and that shape's ``attribute``: for a neutral one
    (label 1) a colour and kind absent from the scene, and no attribute."""
    if label == 1:
        color, kind = _absent_combo(scene, rng)
        return color, kind, None
    shape = _pick(rng, scene.shapes)
    return shape.color, shape.kind, getattr(shape, attribute)


def _h_size(scene: Scene, label: int, rng: np.random.Generator) -> str:
    color, kind, own = _subject(scene, label, rng, "size")
    return f"the {color} {kind} is {_property(rng, SIZES, own, label)}"


def _h_position(scene: Scene, label: int, rng: np.random.Generator) -> str:
    color, kind, own = _subject(scene, label, rng, "position")
    return f"the {color} {kind} is {where(_property(rng, POSITIONS, own, label))}"


def _h_color(scene: Scene, label: int, rng: np.random.Generator) -> str:
    if label == 1:
        occupied = {(s.kind, s.position) for s in scene.shapes}
        kind, position = _pick(rng, [(k, p) for k in KINDS for p in POSITIONS if (k, p) not in occupied])
        own = None
    else:
        shape = _pick(rng, scene.shapes)
        kind, position, own = shape.kind, shape.position, shape.color
    return f"the {kind} {where(position)} is {_property(rng, tuple(COLORS), own, label)}"


HYPOTHESIS_TEMPLATES = (_h_size, _h_position, _h_color)


def hypothesis(scene: Scene, label: int, rng: np.random.Generator) -> str:
    """A hypothesis about ``scene`` with SNLI-VE ``label``: 2 true of a shape in the image, 0 false
    of a shape in the image, 1 about a shape the image does not hold (undecidable)."""
    return HYPOTHESIS_TEMPLATES[int(rng.integers(len(HYPOTHESIS_TEMPLATES)))](scene, label, rng)
