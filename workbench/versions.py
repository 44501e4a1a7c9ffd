"""Where the workbench leans on another library's private API: the versions it was tested with, checked before use.

A private method can change meaning in any release without a deprecation, so
code that overrides or calls one asks `require_private_api` first: outside the
tested range (or when a name is gone) it stops with an error that names the
range and the install that fixes it, instead of training subtly wrong.
WORKBENCH_ALLOW_UNTESTED=1 accepts another version as long as the names exist.
"""

import functools
import importlib.metadata
import os

from packaging.version import Version

# package: (lowest tested, first untested) -- the pins of requirements.txt
TESTED = {"transformers": ("5.24", "5.25"), "trl": ("1.16", "1.17")}


class UntestedLibrary(RuntimeError):
    """An installed library whose private API the workbench was not tested with."""


@functools.cache
def _installed(package: str) -> str:
    return importlib.metadata.version(package)


def require_private_api(package: str, owner: object, *names: str) -> None:
    """Refuse, with the fix, when `owner` lacks `names` or `package` is outside its tested range.

    >>> class Trainer:
    ...     def _step(self): ...
    >>> require_private_api("trl", Trainer, "_gone")
    Traceback (most recent call last):
    ...
    workbench.versions.UntestedLibrary: the workbench uses trl's private _gone, ... which this trl lacks: ...
    """
    low, high = TESTED[package]
    missing = [name for name in names if not hasattr(owner, name)]
    if not missing and (is_tested(package) or os.environ.get("WORKBENCH_ALLOW_UNTESTED") == "1"):
        return
    lacks = f", which this {package} lacks" if missing else ""
    raise UntestedLibrary(
        f"the workbench uses {package}'s private {', '.join(missing or names)}, tested with {package} >= {low}, "
        f"< {high}; {_installed(package)} is installed{lacks}: pip install '{package}>={low},<{high}'"
        + ("" if missing else " (or set WORKBENCH_ALLOW_UNTESTED=1 to try it anyway)"))


def is_tested(package: str) -> bool:
    """Whether the installed `package` lies in its tested range."""
    low, high = TESTED[package]
    return Version(low) <= Version(_installed(package)) < Version(high)
