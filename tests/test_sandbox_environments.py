"""The code sandbox works from every interpreter environment a user runs the app in.

Each case builds a real environment whose image libraries (numpy, OpenCV,
Pillow) live only in that environment's own folder -- a venv, a venv with
--system-site-packages, the user site (PYTHONUSERBASE), a relocated
standalone prefix as conda makes -- then starts the sandbox from that
environment's interpreter in every isolation mode this machine has, runs
code on an image, and checks that the worker imported the libraries from
the same place the host would and kept the host's library import path.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tools import _sandbox_confine as confine
from tools._sandbox_launch import bwrap_binary

ROOT = Path(__file__).resolve().parent.parent
LIBRARIES = ("numpy", "cv2", "PIL")
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)

PROBE = r"""
import json, sys
from tools._sandbox_launch import library_sys_path
from tools.code_sandbox import CodeSandbox
code = ("import cv2\nimg = cv2.imread('path_to_input_image.jpg')\n"
        "cv2.imwrite('path_to_output_image.jpg', cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE))\nprint(img.shape)")
report = {"host_sys_path": library_sys_path(), "modes": {}}
for mode in sys.argv[2:]:
    with CodeSandbox(isolation=mode) as sandbox:
        result = sandbox.run(code, sys.argv[1])
        report["modes"][mode] = {"ok": result.ok, "stdout": result.stdout, "error": result.error,
                                 "outputs": len(result.output_images), "details": sandbox.isolation_details}
print(json.dumps(report))
"""


def _modes() -> list[str]:
    modes = []
    if bwrap_binary() and confine.seccomp_available():
        modes.append("bwrap")
    if confine.landlock_abi() > 0 and confine.seccomp_available():
        modes.append("landlock")
    return modes


def _package_folders() -> list[Path]:
    """The installed folders of numpy, OpenCV and Pillow, with their bundled shared libraries."""
    folders = []
    for name in LIBRARIES:
        package = Path(importlib.util.find_spec(name).origin).parent
        folders.append(package)
        folders += sorted(package.parent.glob(f"{name.lower()}*.libs"))
    site_packages = Path(importlib.util.find_spec("cv2").origin).parent.parent
    folders += sorted(site_packages.glob("opencv_python*.libs")) + sorted(site_packages.glob("pillow*.libs"))
    return sorted(set(folders))


def _install_libraries(site_packages: Path) -> None:
    """Put the libraries into `site_packages` (hard links where the filesystem allows, else copies)."""
    site_packages.mkdir(parents=True, exist_ok=True)

    def link_or_copy(source, target):
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)

    for folder in _package_folders():
        shutil.copytree(folder, site_packages / folder.name, copy_function=link_or_copy)


def _venv(tmp_path: Path, *flags: str) -> tuple[Path, Path]:
    target = tmp_path / "venv"
    subprocess.run([BASE_PYTHON, "-m", "venv", "--without-pip", *flags, str(target)], check=True, timeout=120)
    python = target / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    _install_libraries(Path(purelib))
    return python, Path(purelib)


def _user_site(tmp_path: Path, env: dict) -> tuple[Path, Path]:
    env["PYTHONUSERBASE"] = str(tmp_path / "userbase")
    user_site = subprocess.run([BASE_PYTHON, "-m", "site", "--user-site"], capture_output=True, text=True,
                               env=env, check=True).stdout.strip()
    _install_libraries(Path(user_site))
    return Path(BASE_PYTHON), Path(user_site)


def _relocated_prefix(tmp_path: Path) -> tuple[Path, Path]:
    """A standalone prefix (bin/python + lib/pythonX.Y) in a new place, as conda or a tarball Python has."""
    prefix, base = tmp_path / "prefix", Path(sys.base_prefix)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    (prefix / "bin").mkdir(parents=True)
    shutil.copy2(os.path.realpath(BASE_PYTHON), prefix / "bin" / version)
    shutil.copytree(stdlib, prefix / "lib" / version, symlinks=True,
                    ignore=shutil.ignore_patterns("site-packages", "__pycache__", "test"))
    for lib in base.glob("lib/libpython*"):
        shutil.copy2(lib, prefix / "lib" / lib.name, follow_symlinks=False)
    site_packages = prefix / "lib" / version / "site-packages"
    _install_libraries(site_packages)
    return prefix / "bin" / version, site_packages


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["venv", "venv-system-site-packages", "user-site", "relocated-prefix"])
def test_sandbox_runs_from_each_interpreter_environment(kind, tmp_path):
    modes = _modes()
    if not modes:
        pytest.skip("neither bwrap nor Landlock + seccomp works on this machine")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.pop("PYTHONNOUSERSITE", None)
    if kind == "venv":
        python, libraries = _venv(tmp_path)
    elif kind == "venv-system-site-packages":
        python, libraries = _venv(tmp_path, "--system-site-packages")
    elif kind == "user-site":
        python, libraries = _user_site(tmp_path, env)
    else:
        python, libraries = _relocated_prefix(tmp_path)
    image = tmp_path / "card.png"
    image.write_bytes((ROOT / "workbench/demo/items/images/rotation90_1_proc.png").read_bytes())
    done = subprocess.run([str(python), "-c", PROBE, str(image), *modes], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    host_path = report["host_sys_path"]
    assert str(libraries.resolve()) in host_path
    assert str(ROOT) not in host_path  # the project never reaches the worker's import path
    for mode in modes:
        outcome = report["modes"][mode]
        assert outcome["ok"] and outcome["outputs"] == 1 and outcome["stdout"].strip(), (mode, outcome)
        details = outcome["details"]
        for name, origin in details["libraries"].items():
            assert Path(origin).resolve().is_relative_to(libraries.resolve()), (mode, name, origin)
        assert details["sys_path"] == host_path, mode
    if kind == "venv-system-site-packages":  # the base interpreter's packages stay visible, as on the host
        base_site = os.path.realpath(sysconfig.get_paths(vars={"base": sys.base_prefix,
                                                               "platbase": sys.base_prefix})["purelib"])
        assert base_site in report["modes"][modes[0]]["details"]["sys_path"]
