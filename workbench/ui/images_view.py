"""Images for the trace views: stored images by SHA, crop boxes drawn on inputs, before/after per turn.

Plain Python (no Gradio). Images come back as downscaled PIL copies, so the
app never has to expose the image store's folder to the web server.
Crop boxes use the protocol's 0..1000 scale of width and height.
"""

from pathlib import Path

from PIL import Image, ImageDraw

from workbench import protocol
from workbench.images import ImageError, image_path, load_image
from workbench.trace import Trace, Turn

DISPLAY_MAX_SIDE = 1024
BOX_COLOUR = (239, 68, 68)

Captioned = tuple[Image.Image, str]


def box_pixels(box: tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
    """A 0..1000 box in pixel coordinates of a width x height image, ordered and clamped.

    >>> box_pixels((100, 200, 500, 1000), 200, 100)
    (20, 20, 100, 100)
    """
    x0, y0, x1, y1 = box
    xs = sorted((x0 * width / 1000, x1 * width / 1000))
    ys = sorted((y0 * height / 1000, y1 * height / 1000))
    clamp = lambda v, hi: int(round(min(max(v, 0), hi)))
    return clamp(xs[0], width), clamp(ys[0], height), clamp(xs[1], width), clamp(ys[1], height)


def draw_box(image: Image.Image, box: tuple[float, float, float, float] | None) -> Image.Image:
    """A copy of `image` with the 0..1000 `box` outlined (unchanged copy when box is None)."""
    image = image.convert("RGB").copy()
    if box is None:
        return image
    pixels = box_pixels(box, image.width, image.height)
    line = max(3, round(max(image.size) / 110))
    ImageDraw.Draw(image).rectangle(pixels, outline=BOX_COLOUR, width=line)
    return image


def shrink(image: Image.Image, max_side: int = DISPLAY_MAX_SIDE) -> Image.Image:
    if max(image.size) <= max_side:
        return image
    image = image.copy()
    image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return image


def stored_image(sha: str | None) -> Image.Image | None:
    """The stored image with this SHA, or None when it is missing or unreadable."""
    if not sha:
        return None
    try:
        return load_image(image_path(sha))
    except ImageError:
        return None


def input_images(trace: Trace) -> list[Captioned]:
    """The trace's input image(s); the question's crop box (if any) drawn on the first."""
    box = protocol.find_box(trace.question)
    out = []
    for position, sha in enumerate(trace.images):
        image = stored_image(sha)
        if image is None:
            continue
        caption = f"input {position + 1}"
        if position == 0 and box is not None:
            caption += f" · box {[int(v) for v in box]}"
        out.append((shrink(draw_box(image, box if position == 0 else None)), caption))
    return out


def turn_images(trace: Trace, turn: Turn) -> list[Captioned]:
    """Before/after for one turn: the input (box drawn), the image the model saw, the tool's outputs."""
    gallery = input_images(trace)
    if turn.image and turn.image not in trace.images:
        seen = stored_image(turn.image)
        if seen is not None:
            gallery.append((shrink(seen), f"before: what turn {turn.index + 1} saw"))
    if turn.tool_call:
        for position, sha in enumerate(turn.tool_call.output_images):
            produced = stored_image(sha)
            if produced is not None:
                gallery.append((shrink(produced), f"after: tool output {position + 1}"))
    return gallery


def preview_files(paths: list[str | Path], question: str) -> list[Captioned]:
    """Playground preview of chosen images, with the question's crop box drawn on the first."""
    box = protocol.find_box(question or "")
    out = []
    for position, path in enumerate(paths):
        try:
            image = load_image(path)
        except ImageError:
            continue
        caption = Path(path).name if position or box is None else f"{Path(path).name} · box {[int(v) for v in box]}"
        out.append((shrink(draw_box(image, box if position == 0 else None)), caption))
    return out
