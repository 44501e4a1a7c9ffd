"""MAT-Coding-mini: procedurally rendered images with the paper's degradations, in MAT-Coding format.

Each item renders a clean image (a card with a dark band along its top edge,
so orientation is visible, and one big coloured shape or arrow), applies one
or two degradations (rotation90, rotation180, dark, overexposure, blur,
noise) or asks about one of four small shapes given a 0..1000 box (crop),
and writes the clean image as `ori_image_path`, the degraded one as
`processed_image_path`, the labels as `type`, the gold answer and the split.
Simple items carry one degradation, hard ones a combination or a crop;
simple items come first, as in MAT-Coding.

The questions (a shape's colour, its kind, an arrow's direction) are ones a
model of a few million parameters can answer from 16 image tokens once the
image is repaired; reading words would need far more resolution. Rotations
change an arrow's apparent direction, dark and overexposed images wash out
colours, and a crop question cannot be answered without finding the box, so
the tools matter. Everything is seeded: the same arguments give the same files.
"""

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from workbench.benchmarks.mat_search_mini import COLOURS, draw_shape

SIZE = 224
# Seed offsets of the demo world's coding splits: "test" is held out from every training stage, and "rl"
# holds GRPO prompts that no SFT stage of the demo model saw (click-to-train draws from it too).
SPLIT_SEEDS = {"train": 0, "test": 1000, "rl": 2000}
HIDDEN_SEED_OFFSET = 100  # the click-to-train task's splits (generate_hidden_colours), clear of the coding ones
SHAPES = ["circle", "square", "triangle", "star"]
DIRECTIONS = ["up", "right", "down", "left"]
CARDS = [(245, 240, 225), (225, 240, 250), (240, 225, 235), (230, 245, 225)]
BAND = (60, 60, 60)
SINGLE = ["none", "rotation90", "rotation180", "dark", "overexposure", "blur", "noise"]
PAIRS = [("rotation90", "dark"), ("rotation180", "blur"), ("rotation90", "noise"), ("rotation180", "dark"),
         ("overexposure", "rotation90"), ("blur", "dark"), ("noise", "overexposure")]
# The click-to-train task's kinds (generate_hidden_colours): colour questions that the degradation hides.
HIDDEN_COLOUR_KINDS = [["crop"], ["dark"], ["overexposure"], ["blur", "dark"], ["noise", "overexposure"]]
QUESTIONS = {"colour": "What colour is the shape in the image?", "shape": "What shape is in the image?",
             "arrow": "Which way does the arrow point?"}


@dataclass
class MiniItem:
    id: int
    question: str
    answers: list[str]
    types: list[str]
    split: str
    box: list[int] | None = None


def draw_arrow(draw: ImageDraw.ImageDraw, direction: str, centre: tuple[int, int], r: int, fill) -> None:
    """A thick arrow pointing up, right, down or left."""
    points = [(-0.3, 1.0), (-0.3, -0.1), (-0.75, -0.1), (0.0, -1.0), (0.75, -0.1), (0.3, -0.1), (0.3, 1.0)]
    turns = DIRECTIONS.index(direction)  # quarter turns clockwise from "up"
    cx, cy = centre
    for _ in range(turns):
        points = [(-y, x) for x, y in points]
    draw.polygon([(cx + x * r, cy + y * r) for x, y in points], fill=fill)


def render_card(kind: str, target: str, colour: str, rng: random.Random) -> Image.Image:
    """A clean image: a card, a dark band along the top edge, and one big shape or arrow in the middle."""
    image = Image.new("RGB", (SIZE, SIZE), rng.choice(CARDS))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, SIZE, 30), fill=BAND)
    centre = (SIZE // 2 + rng.randrange(-10, 11), SIZE // 2 + 14 + rng.randrange(-10, 11))
    if kind == "arrow":
        draw_arrow(draw, target, centre, 68, COLOURS[colour])
    else:
        draw_shape(draw, target, centre, 62, COLOURS[colour])
    return image


def render_crop_scene(colours: list[str], rng: random.Random) -> tuple[Image.Image, list[list[int]]]:
    """A larger card with four small shapes in the quadrants; returns the image and each shape's 0..1000 box."""
    size = SIZE * 2
    image = Image.new("RGB", (size, size), rng.choice(CARDS))
    draw = ImageDraw.Draw(image)
    boxes = []
    for index, colour in enumerate(colours):
        cx = (index % 2) * size // 2 + size // 4 + rng.randrange(-30, 30)
        cy = (index // 2) * size // 2 + size // 4 + rng.randrange(-30, 30)
        r = 30
        draw_shape(draw, rng.choice(SHAPES), (cx, cy), r, COLOURS[colour])
        pad = 12
        boxes.append([round(v * 1000 / size) for v in (cx - r - pad, cy - r - pad, cx + r + pad, cy + r + pad)])
    return image, boxes


def degrade(image: Image.Image, label: str, rng: np.random.Generator) -> Image.Image:
    """Apply one degradation; the matching repair is in workbench.benchmarks.mini_expert."""
    if label == "rotation90":
        return image.rotate(90, expand=True)
    if label == "rotation180":
        return image.rotate(180)
    if label == "dark":
        return Image.fromarray((np.asarray(image, dtype=np.float32) * 0.22).astype(np.uint8))
    if label == "overexposure":
        array = np.asarray(image, dtype=np.float32) * 0.3 + 175
        return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))
    if label == "blur":
        return image.filter(ImageFilter.GaussianBlur(radius=4))
    if label == "noise":
        array = np.asarray(image, dtype=np.float32) + rng.normal(0, 45, (image.height, image.width, 3))
        return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))
    if label == "none":
        return image
    raise ValueError(f"unknown degradation {label!r}")


def _card_item(item_id: int, labels: list[str], split: str, rng: random.Random,
               kind: str | None = None) -> tuple[MiniItem, Image.Image]:
    kind = kind or rng.choices(list(QUESTIONS), weights=[0.35, 0.25, 0.4])[0]
    colour = rng.choice(list(COLOURS))
    target = rng.choice(DIRECTIONS if kind == "arrow" else SHAPES)
    answer = colour if kind == "colour" else target
    return MiniItem(item_id, QUESTIONS[kind], [answer], labels, split), render_card(kind, target, colour, rng)


def _crop_item(item_id: int, rng: random.Random) -> tuple[MiniItem, Image.Image]:
    colours = rng.sample(list(COLOURS), 4)
    image, boxes = render_crop_scene(colours, rng)
    target = rng.randrange(4)
    box = boxes[target]
    question = f"What colour is the shape within the {box} of the image?"
    return MiniItem(item_id, question, [colours[target]], ["crop"], "hard", box), image


def generate(out_dir: str | Path, count: int = 200, seed: int = 0, simple_fraction: float = 0.35) -> Path:
    """Write `count` items (images + mat_coding_mini.json) into out_dir; returns the JSON path."""
    rng = random.Random(seed)
    simple = round(count * simple_fraction)
    drawn = []
    for item_id in range(count):
        if item_id < simple:
            drawn.append(_card_item(item_id, [SINGLE[item_id % len(SINGLE)]], "simple", rng))
        elif rng.random() < 0.3:
            drawn.append(_crop_item(item_id, rng))
        else:
            pair = list(PAIRS[rng.randrange(len(PAIRS))])
            drawn.append(_card_item(item_id, pair, "hard", rng))
    return _write(out_dir, drawn, np.random.default_rng(seed))


def generate_hidden_colours(out_dir: str | Path, count: int = 200, seed: int = 0) -> Path:
    """The click-to-train task: `count` colour questions whose answer the image hides until code repairs it.

    Items take HIDDEN_COLOUR_KINDS in turn: the colour of one of four small shapes inside a box (crop), or
    of the one big shape on a dark or washed-out card (with blur or noise on top for the pairs). Answering
    from the image as it is mostly guesses; cropping or undoing the degradation shows the colour.
    """
    rng = random.Random(seed)
    drawn = []
    for item_id in range(count):
        labels = HIDDEN_COLOUR_KINDS[item_id % len(HIDDEN_COLOUR_KINDS)]
        if labels == ["crop"]:
            drawn.append(_crop_item(item_id, rng))
        else:
            drawn.append(_card_item(item_id, list(labels), "simple" if len(labels) == 1 else "hard", rng,
                                    kind="colour"))
    return _write(out_dir, drawn, np.random.default_rng(seed))


def hidden_split_seed(split: str, seed: int = 0) -> int:
    """The seed of the hidden-colour task's `split` in the demo world of `seed` (the Train tab draws the same).

    >>> hidden_split_seed("test"), hidden_split_seed("rl")
    (1100, 2100)
    """
    return seed + SPLIT_SEEDS[split] + HIDDEN_SEED_OFFSET


def _write(out_dir: str | Path, drawn: list[tuple[MiniItem, Image.Image]], noise_rng: np.random.Generator) -> Path:
    """Degrade each drawn clean image, save both images and the items file; returns the JSON path."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for item, clean in drawn:
        processed = clean
        if item.types != ["crop"]:
            for label in item.types:
                processed = degrade(processed, label, noise_rng)
        kind = "+".join(item.types)
        ori_name, proc_name = f"images/{kind}_{item.id}_ori.png", f"images/{kind}_{item.id}_proc.png"
        clean.save(out / ori_name)
        processed.save(out / proc_name)
        records.append({"id": item.id, "question": item.question, "answers": item.answers,
                        "ori_image_path": ori_name, "processed_image_path": proc_name,
                        "type": item.types, "split": item.split})
    path = out / "mat_coding_mini.json"
    path.write_text(json.dumps(records, indent=1), encoding="utf-8")
    return path
