"""Turning a model's `<code>` argument into the program the sandbox runs.

Owns: stripping the ```python fence (and stray `<code>` tags), the protocol's
placeholder paths (`path_to_input_image.jpg` / `path_to_output_image.jpg`),
and crop boxes normalised to 0..1000 of the image's width and height.

How a crop is expressed (see PROTOCOL.md and the MAT-Coding crop cases):
- Every job's code can use `INPUT_WIDTH`, `INPUT_HEIGHT` (pixel size of the
  input image) and `denormalize_box(box)`, which turns a 0..1000 box into a
  pixel box `(x0, y0, x1, y1)` for that image, e.g.
  `x0, y0, x1, y1 = denormalize_box([366, 723, 506, 851]); img[y0:y1, x0:x1]`.
- When the caller passes the question's box (`crop_box=`), the sandbox also
  does what the paper's runner did, so that released checkpoints work
  unchanged: every two-dimensional slice `[a:b, c:d]` in the code is replaced
  by the pixel slice `[y0:y1, x0:x1]` of that box (the model writes the slice
  with the 0..1000 numbers or with names, the runner fills in pixels), and
  `CROP_BOX` / `CROP_BOX_PIXELS` are defined for the code.
Rewrites never add or remove lines, so error line numbers stay the model's.

Imported both as `tools._sandbox_code` and by the worker as a top-level
module, so it uses only the standard library.
"""

import re
import textwrap

INPUT_PLACEHOLDER = "path_to_input_image.jpg"
OUTPUT_PLACEHOLDER = "path_to_output_image.jpg"

_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)(?:\n[ \t]*```|\Z)", re.S | re.I)
# One slice part: anything but brackets, colons and newlines, or one nested [..] (e.g. box[1]).
_SLICE_PART = r"((?:[^\[\]:\n]|\[[^\[\]\n]*\])+?)"
_TWO_D_SLICE = re.compile(r"\[\s*" + r"\s*:\s*".join([_SLICE_PART] * 2) + r"\s*,\s*"
                          + r"\s*:\s*".join([_SLICE_PART] * 2) + r"\s*\]")


def extract_source(argument: str) -> str:
    """The Python source of a `<code>` argument: fence and tags removed, dedented."""
    text = argument.strip()
    text = re.sub(r"^\s*<code>", "", text)
    text = re.sub(r"</code>\s*$", "", text)
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1)
    return textwrap.dedent(text).strip("\n") + "\n"


def denormalize_box(box, width: int, height: int) -> tuple[int, int, int, int]:
    """A 0..1000 box [x_min, y_min, x_max, y_max] as a pixel box (x0, y0, x1, y1) of a width x height image.

    Rounds down like the paper's runner (int(v / 1000 * size)), orders the
    corners, clamps to the image and keeps at least one pixel.

    >>> denormalize_box([366, 723, 506, 851], 500, 332)
    (183, 240, 253, 282)
    """
    if len(box) != 4:
        raise ValueError(f"a box needs 4 numbers [x_min, y_min, x_max, y_max], got {list(box)!r}")
    x_min, y_min, x_max, y_max = (float(v) for v in box)

    def scale(value: float, size: int) -> int:
        return min(max(int(value / 1000 * size), 0), size)

    x0, x1 = sorted((scale(x_min, width), scale(x_max, width)))
    y0, y1 = sorted((scale(y_min, height), scale(y_max, height)))
    if x1 == x0:
        x0, x1 = (x0, x0 + 1) if x0 < width else (x0 - 1, x0)
    if y1 == y0:
        y0, y1 = (y0, y0 + 1) if y0 < height else (y0 - 1, y0)
    return x0, y0, x1, y1


def rewrite_crop_slices(code: str, pixel_box: tuple[int, int, int, int]) -> str:
    """Replace every 2-D slice `[a:b, c:d]` with the pixel slice of `pixel_box` (the paper's rule)."""
    x0, y0, x1, y1 = pixel_box
    return _TWO_D_SLICE.sub(f"[{y0}:{y1}, {x0}:{x1}]", code)


def substitute_paths(code: str, input_path: str, output_path: str) -> str:
    """Put the job's real paths where the protocol's placeholders are."""
    return code.replace(INPUT_PLACEHOLDER, input_path).replace(OUTPUT_PLACEHOLDER, output_path)
