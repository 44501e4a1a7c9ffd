"""Demo images for the Playground, drawn in code (no binary files in the repository).

Each demo is a small picture with a question of the kind Visual-ARFT handles:
an upside-down sign (rotation), a dark label (exposure), and a crop question
whose box uses the protocol's 0..1000 scale. Files are written once into
`settings.home()/demo/` and reused.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image, ImageDraw, ImageEnhance, ImageFont

from workbench import settings


@dataclass(frozen=True)
class DemoImage:
    """A demo picture, how to draw it, and a question to ask about it."""

    name: str
    question: str
    draw: Callable[[], Image.Image]


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _sign(text: str, size: tuple[int, int] = (480, 320), background=(250, 204, 21)) -> Image.Image:
    image = Image.new("RGB", size, (71, 85, 105))
    draw = ImageDraw.Draw(image)
    margin = 40
    draw.rounded_rectangle((margin, margin, size[0] - margin, size[1] - margin), radius=18, fill=background,
                           outline=(30, 41, 59), width=6)
    font = _font(56)
    box = draw.textbbox((0, 0), text, font=font)
    x = (size[0] - (box[2] - box[0])) / 2
    y = (size[1] - (box[3] - box[1])) / 2 - box[1]
    draw.text((x, y), text, fill=(17, 24, 39), font=font)
    return image


def _upside_down_sign() -> Image.Image:
    return _sign("OPEN 24H").rotate(180)


def _dark_label() -> Image.Image:
    return ImageEnhance.Brightness(_sign("EXIT 7", background=(134, 239, 172))).enhance(0.22)


def _shelf_with_tag() -> Image.Image:
    image = Image.new("RGB", (640, 400), (226, 232, 240))
    draw = ImageDraw.Draw(image)
    for row, y in enumerate((60, 190, 320)):
        draw.rectangle((20, y + 50, 620, y + 62), fill=(120, 113, 108))
        for column in range(6):
            x = 40 + column * 98
            draw.rectangle((x, y - 10, x + 70, y + 50), fill=((column * 40) % 255, 120 + row * 40, 200 - column * 25))
    # The small price tag the crop question points at: x 560..620 of 640, y 262..292 of 400.
    draw.rectangle((560, 262, 620, 292), fill=(255, 255, 255), outline=(15, 23, 42), width=2)
    draw.text((566, 266), "$4.99", fill=(15, 23, 42), font=_font(18))
    return image


DEMO_IMAGES: dict[str, DemoImage] = {
    demo.name: demo for demo in (
        DemoImage("upside-down sign", "What is written on the sign?", _upside_down_sign),
        DemoImage("dark label", "What does the label say?", _dark_label),
        DemoImage("shelf price tag", "What is the text within the [875, 655, 969, 730] of the image?", _shelf_with_tag),
    )
}


def demo_names() -> list[str]:
    return list(DEMO_IMAGES)


def demo_image_path(name: str) -> Path:
    """The demo picture's PNG file, drawn on first use."""
    if name not in DEMO_IMAGES:
        raise KeyError(f"no demo image {name!r}; choose one of {', '.join(DEMO_IMAGES)}")
    folder = settings.home() / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name.replace(" ", "-") + ".png")
    if not path.exists():
        tmp = path.with_suffix(".tmp.png")
        DEMO_IMAGES[name].draw().save(tmp, format="PNG")
        tmp.replace(path)
    return path
