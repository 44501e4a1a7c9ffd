"""The folders a file path typed into the UI may point into; anything else is refused before it is opened.

A path from the browser (search corpus, training and benchmark data,
image folders, adapters, local model folders) is resolved (symlinks too)
and must lie under one of `allowed_roots()`: WORKBENCH_HOME, the shipped
demo folder, Gradio's upload folder, and the folders the operator lists in
WORKBENCH_FILE_ROOTS (separated by ':'). The refusal is the same sentence
whether or not the file exists, so it confirms nothing about the server's
files. Paths given on the command line are the operator's own and are not
confined.
"""

import os
import tempfile
from pathlib import Path

from workbench import settings


class PathNotAllowed(ValueError):
    """A UI path outside the allowed folders; the message says where files may be and how to add a folder."""


def upload_folder() -> Path:
    """Where Gradio keeps uploaded files (GRADIO_TEMP_DIR, else <tmp>/gradio), as Gradio itself decides it."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")


def allowed_roots() -> list[Path]:
    extra = [Path(entry).expanduser() for entry in os.environ.get("WORKBENCH_FILE_ROOTS", "").split(os.pathsep)
             if entry.strip()]
    roots = [settings.home(), settings.DEMO_DIR, upload_folder(), *extra]
    return [Path(os.path.realpath(root)) for root in roots]


def confine(value: str | os.PathLike, what: str) -> str:
    """`value` as a resolved path inside the allowed folders, or PathNotAllowed naming `what` it was for."""
    resolved = Path(os.path.realpath(Path(value).expanduser()))
    roots = allowed_roots()
    if not any(resolved == root or root in resolved.parents for root in roots):
        raise PathNotAllowed(f"{what} {value} is outside the folders this server reads files from "
                             f"({', '.join(str(root) for root in roots)}); put the file in one of them, or add "
                             "its folder to WORKBENCH_FILE_ROOTS")
    return str(resolved)


def looks_like_a_path(spec: str) -> bool:
    """A model spec naming a local folder rather than a hub id or a built-in name.

    >>> [looks_like_a_path(s) for s in ("/models/x", "./x", "~/x", "Qwen/Qwen2.5-VL-3B-Instruct", "demo")]
    [True, True, True, False, False]
    """
    return spec.startswith(("/", ".", "~"))
