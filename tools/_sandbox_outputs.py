"""Collecting a sandbox job's results: capped stdout/stderr and re-encoded output images.

Runs in the (confined) worker after the job has been killed, so nothing in
the job folder changes underneath. Files are opened through a directory fd
with O_NOFOLLOW and O_NONBLOCK (FIFOs cannot block), must be plain files with
st_nlink == 1 under the size cap, must decode as an allowed format under the
pixel cap (Pillow's bomb check raised as an error) and are re-encoded (JPEG
stays JPEG, everything else becomes PNG), which drops any trailing payload.
Standard library and Pillow only: the worker imports it as a top-level module.
"""

import io
import os
import stat
import warnings

# Small decoder surface on purpose (no TIFF, no GIF): what image code writes in practice.
IMAGE_SUFFIXES = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP"}


def read_capped(path: str, max_chars: int) -> str:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        data = f.read(max_chars * 4)
    text = data.decode("utf-8", errors="replace")
    if len(text) > max_chars or size > len(data):
        text = text[:max_chars] + f"\n[... output truncated: {size} bytes in total]"
    return text


def collect(work: str, input_name: str, output_name: str, limits: dict) -> tuple[list[tuple], list[str]]:
    """Re-encoded output images (name, format, width, height, bytes) and the reasons for refusals.

    Plain files with an image suffix count (the protocol's output first,
    then by name); symlinks, hard links, FIFOs and oversized or undecodable
    files are refused with a reason.
    """
    problems = []
    try:
        dir_fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        return [], [f"the job folder could not be read: {exc.strerror}"]
    try:
        candidates = []
        for name in sorted(os.listdir(dir_fd), key=lambda n: (n != output_name, n)):
            suffix = os.path.splitext(name)[1].lower()
            if name == input_name or suffix not in IMAGE_SUFFIXES:
                continue
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISLNK(info.st_mode):
                problems.append(f"{name} is a symbolic link; symlinks are refused")
            elif stat.S_ISREG(info.st_mode):
                candidates.append(name)
        limit = int(limits["max_output_images"])
        if len(candidates) > limit:
            problems.append(f"the code wrote {len(candidates)} images; at most {limit} are kept")
            candidates = candidates[:limit]
        images = []
        for name in candidates:
            image, problem = _reencode(dir_fd, name, limits)
            if problem:
                problems.append(problem)
            else:
                images.append(image)
        return images, problems
    finally:
        os.close(dir_fd)


def _reencode(dir_fd: int, name: str, limits: dict) -> tuple[tuple | None, str | None]:
    from PIL import Image
    max_bytes, max_pixels = int(limits["max_file_mb"]) * 1024 * 1024, int(limits["max_output_pixels"])
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError as exc:
        return None, f"{name} could not be opened: {exc.strerror}"
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            return None, f"{name} is a hard link or not a plain file; refused"
        if info.st_size > max_bytes:
            return None, f"{name} has {info.st_size} bytes, over the {limits['max_file_mb']} MB limit"
        data = f.read(max_bytes + 1)
    default_max_pixels, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, max_pixels  # single-threaded worker
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=sorted(set(IMAGE_SUFFIXES.values()))) as image:
                if image.width * image.height > max_pixels:
                    return None, (f"{name} is {image.width}x{image.height}, over the "
                                  f"{max_pixels}-pixel limit for output images")
                image.load()
                fmt = "JPEG" if image.format == "JPEG" else "PNG"
                keep_modes = ("L", "RGB") if fmt == "JPEG" else ("1", "L", "LA", "RGB", "RGBA", "P")
                clean = image if image.mode in keep_modes else image.convert("RGBA" if "A" in image.mode else "RGB")
                out = io.BytesIO()
                clean.save(out, fmt, **({"quality": 95} if fmt == "JPEG" else {"compress_level": 1}))
    except Exception as exc:
        return None, f"{name} is not a readable image ({type(exc).__name__}: {exc})"[:500]
    finally:
        Image.MAX_IMAGE_PIXELS = default_max_pixels
    stem = os.path.splitext(name)[0]
    return (stem + (".jpg" if fmt == "JPEG" else ".png"), fmt, clean.width, clean.height, out.getvalue()), None
