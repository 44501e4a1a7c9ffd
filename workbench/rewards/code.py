"""Code-step rewards: the paper's constant, and rewards that look at what the code did.

The rewards stay pure: they read execution results recorded by the rollout
as dataset-style columns (one value per completion):
- `code_ok`: True/False, did the code run without error;
- `output_image`: path of the image it wrote (None if none);
- `input_image` (or `image_path`): the image the code step was given;
- `clean_image`: the undegraded reference image, when one exists.
`run_code_steps` fills `code_ok` / `output_image` with a caller-supplied
runner (e.g. the sandbox) for per-step training, where nothing else ran the
code. Image similarity is SSIM (or PSNR) on grey, downscaled copies.
"""

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workbench.protocol import extract_code
from workbench.rewards.text import column, expected_kinds, find_action

SIMILARITY_METRICS = ("ssim", "psnr")
COMPARE_SIDE = 256  # images are compared at most this large: SSIM of the layout, not of JPEG noise
PSNR_CEILING_DB = 50.0


@dataclass
class CodeRun:
    """What running one code action gave."""

    ok: bool
    output_image: str | None = None
    error: str | None = None


def code_of(completion: Any) -> str | None:
    """The Python source of the first <code> action in a completion, or None.

    >>> code_of("<think>t</think><code>```python\\nimport cv2\\n```</code>")
    'import cv2\\n'
    """
    argument = find_action(completion, "code")
    if argument is None:
        return None
    code = extract_code(argument)
    return code if code.strip() else None


def _applies(kind: str | None, completion: Any, recorded: Any = None) -> bool:
    """A code reward judges code steps, and unlabelled rows that wrote or ran code."""
    return kind == "code" or (kind is None and (code_of(completion) is not None or recorded is not None))


def _as_code_run(result: Any) -> CodeRun:
    """Accept a CodeRun, a mapping, or a sandbox result with `ok` and `output_images`."""
    if isinstance(result, CodeRun):
        return result
    get = result.get if isinstance(result, dict) else lambda key, default=None: getattr(result, key, default)
    images = get("output_images") or []
    output = get("output_image") or (str(images[0]) if images else None)
    return CodeRun(ok=bool(get("ok", False)), output_image=str(output) if output else None, error=get("error"))


def run_code_steps(completions: list, runner: Callable[[str, Path], Any], **kwargs: Any) -> dict[str, list]:
    """Run each code step's code with `runner(code, input_image)`; return `code_ok` / `output_image` columns.

    Rows that are not code steps, or hold no code, get None / False. A runner
    that raises counts as a failed run (the message is kept in `code_error`).
    """
    n = len(completions)
    kinds = expected_kinds(n, kwargs)
    inputs = column(kwargs, "input_image", n) or column(kwargs, "image_path", n)
    code_ok: list[bool | None] = [None] * n
    outputs: list[str | None] = [None] * n
    errors: list[str | None] = [None] * n
    for i, (completion, kind) in enumerate(zip(completions, kinds)):
        if not _applies(kind, completion):
            continue
        code = code_of(completion)
        if code is None or not inputs or inputs[i] is None:
            code_ok[i], errors[i] = False, "no code" if code is None else "no input image"
            continue
        try:
            run = _as_code_run(runner(code, Path(inputs[i])))
        except Exception as exc:  # a broken runner must not stop training; it scores as "did not run"
            run = CodeRun(False, None, f"{type(exc).__name__}: {exc}")
        code_ok[i], outputs[i], errors[i] = run.ok, run.output_image, run.error
    return {"code_ok": code_ok, "output_image": outputs, "code_error": errors}


def code_constant_reward(completions: list, *, value: float = 0.9, **kwargs: Any) -> list[float | None]:
    """The paper's code reward: `value` for any code action with a python block on a code step.

    >>> code_constant_reward(["<think>t</think><code>```python\\nx = 1\\n```</code>",
    ...                       "<think>t</think><answer>4</answer>"], type=["pre_code"] * 2)
    [0.9, 0.0]
    """
    kinds = expected_kinds(len(completions), kwargs)
    return [(value if code_of(c) is not None else 0.0) if _applies(k, c) else None
            for c, k in zip(completions, kinds)]


def _required(kwargs: dict, name: str, n: int, reward: str) -> list:
    values = column(kwargs, name, n)
    if values is None:
        raise ValueError(f"{reward} needs a {name!r} column recorded by the rollout (or a code runner "
                         f"given to combined_reward); set its weight to 0 if code is not executed")
    return values


def code_ran_reward(completions: list, **kwargs: Any) -> list[float | None]:
    """1 when the step's code ran without error (`code_ok`), else 0.

    >>> code_ran_reward(["<think>t</think><code>```python\\nx = 1\\n```</code>"] * 2,
    ...                 type=["pre_code"] * 2, code_ok=[True, False])
    [1.0, 0.0]
    """
    n = len(completions)
    kinds, ran = expected_kinds(n, kwargs), _required(kwargs, "code_ok", n, "code_ran_reward")
    return [(1.0 if ran[i] is True else 0.0) if _applies(kinds[i], completions[i], ran[i]) else None
            for i in range(n)]


@functools.lru_cache(maxsize=64)
def _grey(path: str, mtime_ns: int, side: int) -> np.ndarray | None:
    import cv2

    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
    if image is None:
        return None
    scale = side / max(image.shape)
    if scale < 1:
        image = cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                           interpolation=cv2.INTER_AREA)
    return image.astype(np.float64)


def load_grey(path: str | Path | None, side: int = COMPARE_SIDE) -> np.ndarray | None:
    """A grey float copy of an image file, longest side at most `side`; None if missing or unreadable."""
    if path is None:
        return None
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        return None
    return _grey(str(path), stat.st_mtime_ns, side) if path.is_file() else None


def code_image_reward(completions: list, **kwargs: Any) -> list[float | None]:
    """1 when the step's code ran and wrote a readable image (`output_image`), else 0.

    >>> code_image_reward(["<think>t</think><code>```python\\nx = 1\\n```</code>"],
    ...                   type=["pre_code"], output_image=["/nonexistent.png"])
    [0.0]
    """
    n = len(completions)
    kinds = expected_kinds(n, kwargs)
    outputs = _required(kwargs, "output_image", n, "code_image_reward")
    ran = column(kwargs, "code_ok", n) or [None] * n
    scores: list[float | None] = []
    for i in range(n):
        if not _applies(kinds[i], completions[i], outputs[i] or ran[i]):
            scores.append(None)
            continue
        scores.append(1.0 if ran[i] is not False and load_grey(outputs[i]) is not None else 0.0)
    return scores


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean structural similarity of two same-size grey images (Gaussian window 11, sigma 1.5)."""
    import cv2

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    blur = functools.partial(cv2.GaussianBlur, ksize=(11, 11), sigmaX=1.5)
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2
    covariance = blur(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * covariance + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def image_similarity(image: np.ndarray, reference: np.ndarray, metric: str = "ssim") -> float:
    """Similarity in [0, 1] of `image` (resized to the reference's shape) to `reference`.

    >>> ramp = np.tile(np.arange(64, dtype=np.float64) * 4, (64, 1))
    >>> image_similarity(ramp, ramp), image_similarity(255 - ramp, ramp) < 0.1
    (1.0, True)
    """
    import cv2

    if metric not in SIMILARITY_METRICS:
        raise ValueError(f"unknown image metric {metric!r}; use one of {', '.join(SIMILARITY_METRICS)}")
    if image.shape != reference.shape:
        image = cv2.resize(image, (reference.shape[1], reference.shape[0]), interpolation=cv2.INTER_AREA)
    if metric == "ssim":
        return min(1.0, max(0.0, _ssim(image, reference)))
    mse = float(np.mean((image - reference) ** 2))
    psnr = math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)
    return min(psnr, PSNR_CEILING_DB) / PSNR_CEILING_DB


def restoration_gain(input_image: np.ndarray, output_image: np.ndarray | None, clean_image: np.ndarray,
                     metric: str = "ssim") -> float:
    """How much of the gap between input and clean image the output closed, clamped to [0, 1].

    (sim(output, clean) - sim(input, clean)) / (1 - sim(input, clean)); an
    input that is already clean scores 1 if the output stays as close, else 0.
    """
    if output_image is None:
        return 0.0
    before = image_similarity(input_image, clean_image, metric)
    after = image_similarity(output_image, clean_image, metric)
    gap = 1.0 - before
    if gap < 1e-6:
        return 1.0 if after >= before - 1e-3 else 0.0
    return min(1.0, max(0.0, (after - before) / gap))


def code_restoration_reward(completions: list, *, metric: str = "ssim", **kwargs: Any) -> list[float | None]:
    """Did the code's output image move closer to the clean reference than its input? (0..1)

    Applies only to code steps with a readable `clean_image` and input image;
    a missing or unreadable output scores 0. See `restoration_gain`.

    >>> code_restoration_reward(["<think>t</think><code>```python\\nx = 1\\n```</code>"],
    ...     type=["pre_code"], output_image=[None], input_image=[None], clean_image=[None])
    [None]
    """
    n = len(completions)
    kinds = expected_kinds(n, kwargs)
    outputs = _required(kwargs, "output_image", n, "code_restoration_reward")
    inputs = column(kwargs, "input_image", n) or column(kwargs, "image_path", n) or [None] * n
    cleans = column(kwargs, "clean_image", n) or [None] * n
    ran = column(kwargs, "code_ok", n) or [None] * n
    scores: list[float | None] = []
    for i in range(n):
        clean, source = load_grey(cleans[i]), load_grey(inputs[i])
        if clean is None or source is None or not _applies(kinds[i], completions[i], outputs[i] or ran[i]):
            scores.append(None)
            continue
        output = load_grey(outputs[i]) if ran[i] is not False else None
        scores.append(restoration_gain(source, output, clean, metric))
    return scores
