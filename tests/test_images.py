"""Image intake refuses bad input with clear errors and keeps good input byte-exact."""

import hashlib
import io

import pytest
from PIL import Image

from workbench import images
from workbench.images import ImageError, load_image, put_image


def png_bytes(size=(40, 30), color="green") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_truncated_image_is_refused(tmp_path):
    path = tmp_path / "cut.png"
    path.write_bytes(png_bytes((200, 200))[:150])
    with pytest.raises(ImageError, match="cut.png: the image data is damaged or incomplete") as caught:
        put_image(path)
    assert "Error" not in str(caught.value) and " at 0x" not in str(caught.value)  # no exception internals


def test_non_image_file_is_refused(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello, I am not an image")
    with pytest.raises(ImageError, match="notes.txt: this is not an image file") as caught:
        load_image(path)
    assert "BytesIO" not in str(caught.value) and " at 0x" not in str(caught.value)


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(tmp_path / "empty.png")
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.png")


def test_hundred_megapixel_image_is_refused_before_decoding(tmp_path):
    # A 10000x10000 1-bit PNG is tiny on disk but 100 MP when decoded.
    path = tmp_path / "bomb.png"
    Image.new("1", (10_000, 10_000)).save(path, optimize=True)
    assert path.stat().st_size < 1_000_000
    with pytest.raises(ImageError, match="decompression bomb|megapixels"):
        put_image(path)


def test_stored_file_keeps_source_bytes(tmp_path):
    data = png_bytes()
    stored = put_image(data)
    assert stored.sha == hashlib.sha256(data).hexdigest()
    assert stored.path.read_bytes() == data
    assert images.image_path(stored.sha) == stored.path


def test_other_formats_are_stored_as_png(tmp_path):
    path = tmp_path / "pic.bmp"
    Image.new("RGB", (10, 10), "red").save(path)
    stored = put_image(path)
    assert stored.format == "PNG" and stored.path.suffix == ".png"


def test_a_stored_file_left_short_is_written_again_when_the_image_comes_back(tmp_path):
    # what a power cut can leave of a file written without fsync (thumbnails): the name, not all the bytes
    source = tmp_path / "a.png"
    Image.new("RGB", (300, 200), (10, 200, 30)).save(source)
    stored = put_image(source)
    stored.path.write_bytes(stored.path.read_bytes()[:50])
    stored.thumbnail.write_bytes(b"")
    again = put_image(source)
    assert again.path.read_bytes() == source.read_bytes()
    assert Image.open(again.thumbnail).size == (160, 107)
    assert not list(stored.path.parent.glob(".tmp-*"))


def test_a_missing_or_empty_thumbnail_is_made_again_from_its_image(tmp_path):
    stored = put_image(png_bytes())
    made = stored.thumbnail.read_bytes()
    stored.thumbnail.write_bytes(b"")
    assert images.thumbnail(stored.sha).read_bytes() == made
    stored.thumbnail.unlink()
    assert images.thumbnail(stored.sha).read_bytes() == made
    stored.path.unlink()
    stored.thumbnail.unlink()
    assert images.thumbnail(stored.sha) is None
