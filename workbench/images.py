"""Safe image intake and the content-addressed image folder.

Every image the workbench keeps (uploads, benchmark inputs, tool outputs) is
validated here first: size on disk, pixel count (decompression-bomb guard),
a full decode (truncated files fail here, not later inside a model), and a
format allow-list. Valid images are stored once under their SHA-256 in
`settings.images_dir()`, with a small JPEG thumbnail beside them.

Images are written whole or not at all and fsynced (they survive a killed
process and a power cut). Thumbnails are derived data: written whole but not
fsynced (that halves the cost of storing an image), and one that is missing
or left empty is made again from its image when it is next stored or shown.
"""

import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from workbench import settings
from workbench.files import atomic_write

MAX_IMAGE_BYTES = int(os.environ.get("WORKBENCH_MAX_IMAGE_BYTES", 50 * 1024 * 1024))
MAX_IMAGE_PIXELS = int(os.environ.get("WORKBENCH_MAX_IMAGE_PIXELS", 40_000_000))
ALLOWED_FORMATS = {"PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"}
THUMBNAIL_SIZE = 160
_KEEP_FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}


class ImageError(ValueError):
    """An image that cannot be accepted; the message says why and what to do."""


@dataclass(frozen=True)
class StoredImage:
    sha: str
    path: Path
    thumbnail: Path
    width: int
    height: int
    format: str
    bytes: int


def _decode(data: bytes, name: str) -> Image.Image:
    """Decode fully under the pixel guard; raise ImageError with a clear reason."""
    if not data:
        raise ImageError(f"{name}: the file is empty; upload a PNG or JPEG image")
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageError(
            f"{name}: {len(data) / 1e6:.1f} MB is over the {MAX_IMAGE_BYTES / 1e6:.0f} MB limit; "
            "downscale the image or raise WORKBENCH_MAX_IMAGE_BYTES"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in ALLOWED_FORMATS:
                raise ImageError(f"{name}: format {image.format} is not accepted; use PNG or JPEG")
            pixels = image.width * image.height
            if pixels > MAX_IMAGE_PIXELS:
                raise ImageError(
                    f"{name}: {image.width}x{image.height} is {pixels / 1e6:.0f} megapixels, over the "
                    f"{MAX_IMAGE_PIXELS / 1e6:.0f} MP limit; downscale it first"
                )
            image.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name}: refused as a decompression bomb ({exc}); downscale it first") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"{name}: this is not an image file; upload a PNG or JPEG image") from exc
    except Exception as exc:  # PIL raises many types for corrupt input; its messages name internals
        raise ImageError(f"{name}: the image data is damaged or incomplete; upload the file again or "
                         "re-save it as PNG or JPEG") from exc
    return image


def load_image(source: "str | Path | bytes | Image.Image", name: str | None = None) -> Image.Image:
    """Open and validate an image from a path, bytes or PIL image; returns an RGB image."""
    if isinstance(source, Image.Image):
        if source.width * source.height > MAX_IMAGE_PIXELS:
            raise ImageError(f"{name or 'image'}: {source.width}x{source.height} is over the pixel limit")
        return source.convert("RGB")
    data, name = _read(source, name)
    image = _decode(data, name)
    return ImageOps.exif_transpose(image).convert("RGB")


def _read(source: "str | Path | bytes", name: str | None) -> tuple[bytes, str]:
    if isinstance(source, bytes):
        return source, name or "image"
    path = Path(source)
    if not path.is_file():
        raise ImageError(f"{path}: no such file; check the image path")
    if path.stat().st_size > MAX_IMAGE_BYTES:
        raise ImageError(f"{path}: {path.stat().st_size / 1e6:.1f} MB is over the image size limit")
    return path.read_bytes(), name or path.name


def image_path(sha: str) -> Path:
    """Where the image with this SHA-256 lives (any kept extension)."""
    folder = settings.images_dir() / sha[:2]
    for ext in ("png", "jpg", "webp"):
        candidate = folder / f"{sha}.{ext}"
        if candidate.exists():
            return candidate
    raise ImageError(f"image {sha[:12]} is not in the image store")


def sha_of_path(path: "str | Path") -> str:
    """The SHA-256 a stored image's file is named after (`<sha>.<ext>`)."""
    return Path(path).name.split(".")[0]


def thumbnail_path(sha: str) -> Path:
    return settings.images_dir() / sha[:2] / f"{sha}.thumb.jpg"


def thumbnail(sha: str) -> Path | None:
    """The image's thumbnail, made again from the image if it is missing or empty; None without the image."""
    thumb = thumbnail_path(sha)
    if _whole(thumb):
        return thumb
    try:
        with Image.open(image_path(sha)) as image:
            _write_thumbnail(image, thumb)
    except (ImageError, OSError):
        return None
    return thumb


def put_image(source: "str | Path | bytes | Image.Image", name: str | None = None) -> StoredImage:
    """Validate and store an image once under its content hash; returns where it lives.

    Files in PNG/JPEG/WEBP keep their original bytes (so hashes match the
    source file); other formats and in-memory images are stored as PNG.
    """
    data, fmt, image = encode_image(source, name)
    sha = hashlib.sha256(data).hexdigest()
    folder = settings.images_dir() / sha[:2]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{sha}.{_KEEP_FORMATS[fmt]}"
    thumb = thumbnail_path(sha)
    if not _whole(path, len(data)):
        atomic_write(path, data)
    if not _whole(thumb):
        _write_thumbnail(image, thumb)
    return StoredImage(sha, path, thumb, image.width, image.height, fmt, len(data))


def encode_image(source: "str | Path | bytes | Image.Image", name: str | None = None) -> tuple[bytes, str, Image.Image]:
    """The validated bytes `put_image` would store, their format and the decoded image (nothing is written).

    A sender that hashes these bytes gets the SHA-256 the receiving store files them under.
    """
    if isinstance(source, Image.Image):
        image = load_image(source, name)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data, fmt = buffer.getvalue(), "PNG"
    else:
        data, name = _read(source, name)
        image = _decode(data, name)
        fmt = image.format
        if fmt not in _KEEP_FORMATS:
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="PNG")
            data, fmt = buffer.getvalue(), "PNG"
    return data, fmt, image


def _whole(path: Path, size: int | None = None) -> bool:
    """The file exists with `size` bytes (any size but 0 when not given)."""
    try:
        found = path.stat().st_size
    except FileNotFoundError:
        return False
    return found == size if size is not None else found > 0


def _write_thumbnail(image: Image.Image, thumb: Path) -> None:
    small = image.convert("RGB")
    if max(small.size) > THUMBNAIL_SIZE:
        small = small.copy()
        small.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=80)
    atomic_write(thumb, buffer.getvalue(), durable=False)
