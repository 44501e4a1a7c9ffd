"""Writing a file whole or not at all, so a crash or a full disk never leaves half a file or its temporary.

`atomic_write` writes a temporary file beside the target, fsyncs it,
renames it over the target and fsyncs the folder (the rename then survives a
crash too); on any error the temporary file is removed and the error raised.
"""

import contextlib
import os
import tempfile
from pathlib import Path

TEMPORARY_PREFIX = ".tmp-"


def atomic_write(path: str | Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMPORARY_PREFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
