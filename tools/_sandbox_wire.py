"""Framing of messages between the sandbox host and its warm worker.

A frame is a 12-byte header (JSON length, blob length), a JSON object and a
binary blob (the input image on requests, re-encoded output images on
results), written on a pipe with plain os.read/os.write. Standard library
only: the worker imports it as a top-level module.
"""

import json
import os
import struct

_HEADER = struct.Struct(">IQ")
MAX_JSON_BYTES = 64 * 1024 * 1024
MAX_BLOB_BYTES = 1 << 32


def write_frame(fd: int, message: dict, blob: bytes = b"") -> None:
    payload = json.dumps(message).encode()
    data = memoryview(_HEADER.pack(len(payload), len(blob)) + payload + blob)
    while data:
        written = os.write(fd, data)
        data = data[written:]


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks, remaining = [], size
    while remaining:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int) -> tuple[dict, bytes] | None:
    """The next (message, blob), or None when the other side closed the pipe."""
    header = _read_exactly(fd, _HEADER.size)
    if header is None:
        return None
    json_size, blob_size = _HEADER.unpack(header)
    if json_size > MAX_JSON_BYTES or blob_size > MAX_BLOB_BYTES:
        raise ValueError(f"oversized frame ({json_size} + {blob_size} bytes)")
    payload = _read_exactly(fd, json_size)
    blob = _read_exactly(fd, blob_size) if blob_size else b""
    if payload is None or blob is None:
        return None
    return json.loads(payload), blob
