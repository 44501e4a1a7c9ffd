"""Private library APIs are used only on the versions they were tested with; elsewhere the error names the fix."""

import pytest

from workbench import versions


def test_the_installed_libraries_are_the_tested_ones():
    assert versions.is_tested("trl") and versions.is_tested("transformers")


def test_an_untested_version_is_refused_with_the_range_and_the_install(monkeypatch):
    monkeypatch.setattr(versions, "_installed", lambda package: "1.17.0")
    monkeypatch.delenv("WORKBENCH_ALLOW_UNTESTED", raising=False)

    class Trainer:
        _logs = {}

    with pytest.raises(versions.UntestedLibrary, match=r"tested with trl >= 1.16, < 1.17; 1.17.0 is installed: "
                                                       r"pip install 'trl>=1.16,<1.17'"):
        versions.require_private_api("trl", Trainer, "_logs")
    monkeypatch.setenv("WORKBENCH_ALLOW_UNTESTED", "1")
    versions.require_private_api("trl", Trainer, "_logs")  # the operator's choice
    with pytest.raises(versions.UntestedLibrary, match="which this trl lacks"):
        versions.require_private_api("trl", Trainer, "_gone")  # a missing name is never accepted


def test_the_pins_in_requirements_lie_in_the_tested_ranges():
    from pathlib import Path

    from packaging.version import Version

    pins = dict(line.split("==") for line in (Path(__file__).parent.parent / "requirements.txt").read_text().split()
                if "==" in line)
    for package, (low, high) in versions.TESTED.items():
        pinned = pins.get(package) or pins[f"{package}[serving]"]
        assert Version(low) <= Version(pinned) < Version(high)
