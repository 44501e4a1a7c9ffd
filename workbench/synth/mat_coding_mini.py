"""MAT-Coding-mini: procedurally rendered images with the paper's degradations, in MAT-Coding format.

Each item renders a clean image (a word or number in large type on a coloured
card, with a few shapes), applies one or two degradations (rotation90,
rotation180, dark, overexposure, blur, noise) or asks about a small region
given as a 0..1000 box (crop), and writes the clean image as
`ori_image_path`, the degraded one as `processed_image_path`, the labels as
`type`, the gold answer and the split. Simple items carry one degradation,
hard ones a combination or a crop; simple items come first, as in MAT-Coding.
Everything is seeded, so the same arguments give the same files.
"""

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

SIZE = 224
WORDS = ["CAT", "SUN", "MAP", "BOX", "KEY", "CUP", "PEN", "SKY", "OWL", "FOX", "BUS", "ICE", "JAM", "TEA",
         "ZIP", "HAT"]
COLOURS = {"red": (200, 40, 40), "green": (40, 150, 60), "blue": (40, 70, 200), "orange": (230, 130, 20),
           "purple": (130, 50, 170), "black": (20, 20, 20)}
CARDS = [(245, 240, 225), (225, 240, 250), (240, 225, 235), (230, 245, 225)]
SINGLE = ["none", "rotation90", "rotation180", "dark", "overexposure", "blur", "noise"]
PAIRS = [("rotation90", "dark"), ("rotation180", "blur"), ("rotation90", "noise"), ("rotation180", "dark"),
         ("overexposure", "rotation90"), ("blur", "dark"), ("noise", "overexposure")]


@dataclass
class MiniItem:
    id: int
    question: str
    answers: list[str]
    types: list[str]
    split: str
    box: list[int] | None = None


def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def render_card(text: str, ink: tuple[int, int, int], card: tuple[int, int, int], rng: random.Random) -> Image.Image:
    """A clean image: big centred text on a card with two decorative shapes."""
    image = Image.new("RGB", (SIZE, SIZE), card)
    draw = ImageDraw.Draw(image)
    for _ in range(2):
        x, y = rng.randrange(0, SIZE - 40), rng.choice([rng.randrange(0, 40), rng.randrange(SIZE - 60, SIZE - 20)])
        shade = tuple(max(0, c - 40) for c in card)
        draw.ellipse((x, y, x + 30, y + 30), fill=shade)
    font = _font(72 if len(text) <= 3 else 56)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    draw.text(((SIZE - (right - left)) / 2 - left, (SIZE - (bottom - top)) / 2 - top), text, font=font, fill=ink)
    return image


def render_crop_scene(labels: list[str], rng: random.Random) -> tuple[Image.Image, list[list[int]]]:
    """A larger card with four small labels in the quadrants; returns the image and each label's 0..1000 box."""
    size = SIZE * 2
    image = Image.new("RGB", (size, size), rng.choice(CARDS))
    draw = ImageDraw.Draw(image)
    font = _font(34)
    boxes = []
    for index, text in enumerate(labels):
        cx, cy = (index % 2) * size // 2 + size // 4, (index // 2) * size // 2 + size // 4
        cx += rng.randrange(-30, 30)
        cy += rng.randrange(-30, 30)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        w, h = right - left, bottom - top
        x0, y0 = cx - w // 2, cy - h // 2
        draw.text((x0 - left, y0 - top), text, font=font, fill=COLOURS["black"])
        pad = 14
        box = [x0 - pad, y0 - pad, x0 + w + pad, y0 + h + pad]
        boxes.append([round(v * 1000 / size) for v in box])
    return image, boxes


def degrade(image: Image.Image, label: str, rng: np.random.Generator) -> Image.Image:
    """Apply one degradation; the matching repair is in workbench.synth.expert."""
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


def _text_item(item_id: int, labels: list[str], split: str, rng: random.Random) -> tuple[MiniItem, Image.Image]:
    if rng.random() < 0.5:
        answer = rng.choice(WORDS)
        question = "What word is written in the image?"
    else:
        answer = str(rng.randrange(10, 100))
        question = "What number is written in the image?"
    ink_name = rng.choice(list(COLOURS))
    if rng.random() < 0.25:
        question, answer_out = "What colour is the text in the image?", ink_name
    else:
        answer_out = answer
    image = render_card(answer, COLOURS[ink_name], rng.choice(CARDS), rng)
    return MiniItem(item_id, question, [answer_out], labels, split), image


def _crop_item(item_id: int, rng: random.Random) -> tuple[MiniItem, Image.Image]:
    labels = rng.sample(WORDS, 4)
    image, boxes = render_crop_scene(labels, rng)
    target = rng.randrange(4)
    box = boxes[target]
    question = f"What word is written within the {box} of the image?"
    return MiniItem(item_id, question, [labels[target]], ["crop"], "hard", box), image


def generate(out_dir: str | Path, count: int = 200, seed: int = 0, simple_fraction: float = 0.35) -> Path:
    """Write `count` items (images + mat_coding_mini.json) into out_dir; returns the JSON path."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    noise_rng = np.random.default_rng(seed)
    simple = round(count * simple_fraction)
    records = []
    for item_id in range(count):
        if item_id < simple:
            item, clean = _text_item(item_id, [SINGLE[item_id % len(SINGLE)]], "simple", rng)
        elif rng.random() < 0.3:
            item, clean = _crop_item(item_id, rng)
        else:
            pair = list(PAIRS[rng.randrange(len(PAIRS))])
            item, clean = _text_item(item_id, pair, "hard", rng)
        processed = clean
        if item.types != ["crop"]:
            for label in item.types:
                processed = degrade(processed, label, noise_rng)
        kind = "+".join(item.types)
        ori_name, proc_name = f"images/{kind}_{item_id}_ori.png", f"images/{kind}_{item_id}_proc.png"
        clean.save(out / ori_name)
        processed.save(out / proc_name)
        records.append({"id": item.id, "question": item.question, "answers": item.answers,
                        "ori_image_path": ori_name, "processed_image_path": proc_name,
                        "type": item.types, "split": item.split})
    path = out / "mat_coding_mini.json"
    path.write_text(json.dumps(records, indent=1), encoding="utf-8")
    return path
