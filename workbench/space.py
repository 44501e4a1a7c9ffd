"""A Hugging Face Space of the workbench: build the folder, check it offline, deploy it with huggingface_hub.

`build_space(out)` writes a ready Space folder: the runtime code (workbench/
without the demo-remake scripts, tools/, trainers/), the demo model and
assets, `app.py`, `requirements.txt` (runtime only), `packages.txt`, a
`.gitattributes` that sends large files through the Hub's large-file
storage, and a README whose front matter configures the Space (sdk and its
version, python_version, app_file). `check_space(out)` validates such a
folder without the network and returns every problem found; `deploy_space`
uploads it with `huggingface_hub` (which handles large files itself), the
token read from HF_TOKEN. This is how trackio ships its Spaces: build a
folder, upload it; this repository is never pushed as the Space.
"""

import fnmatch
import importlib.metadata
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from workbench import settings

PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
HUB_FILE_LIMIT = 10 * 1024 * 1024  # the Hub refuses plain git files over 10 MB
LARGE_FILE_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.onnx")  # model weights
CODE_PACKAGES = ("workbench", "tools", "trainers")
LEFT_OUT = ("__pycache__", "*.pyc", "*.fts.db", "*.bm25idx", ".pytest_cache")
LEFT_OUT_DIRS = ("workbench/synth",)  # scripts that remake the demo assets: nothing at run time imports them
SECRET_NAMES = (".env", "*.pem", "*.key", "id_rsa*", ".netrc", "*.db", "*.db-wal", "*.db-shm")
TOKEN_PATTERN = re.compile(rb"hf_[A-Za-z0-9]{30,}|sk-[A-Za-z0-9]{20,}")
FRONT_MATTER_KEYS = ("sdk", "sdk_version", "python_version", "app_file")


class SpaceError(ValueError):
    """A Space folder that cannot be built, checked or deployed; the message says what to fix."""


@dataclass(frozen=True)
class SpaceOptions:
    public_demo: bool = True
    title: str = "Visual-ARFT Workbench"


def runtime_requirements(path: Path | None = None) -> list[str]:
    """The pinned requirement lines of requirements.txt (what the app needs at run time)."""
    path = path or settings.REPO_ROOT / "requirements.txt"
    lines = [line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith("-")]


def _pin(requirements: list[str], name: str) -> str:
    for line in requirements:
        requirement = Requirement(line)
        if requirement.name.lower() == name and str(requirement.specifier).startswith("=="):
            return str(requirement.specifier)[2:]
    raise SpaceError(f"requirements.txt pins no {name}; the Space front matter needs its version")


def _front_matter(options: SpaceOptions, requirements: list[str]) -> str:
    return "\n".join([
        "---", f"title: {options.title}", "emoji: 🔎", "colorFrom: indigo", "colorTo: green", "sdk: gradio",
        f"sdk_version: {_pin(requirements, 'gradio')}", f'python_version: "{PYTHON_VERSION}"', "app_file: app.py",
        "pinned: false", "license: apache-2.0", "---", ""])


SPACE_README = """
# {title}

A public demo of the [Visual-ARFT workbench](https://arxiv.org/abs/2505.14246): a tiny Qwen2.5-VL trained on a
generated demo world thinks in turns and calls tools -- a sandboxed Python tool that repairs the image, and a
search over the demo world's corpus. Pick a demo image in the **Playground**, run it, and step through every turn
in **Traces**; **Runs** shows a real GRPO run of the demo model. Only the shipped demo model runs here; each
visitor sees their own runs. The model card is `workbench/demo/model/README.md`.

Model-written code runs under Landlock + seccomp (a Space refuses the namespaces bubblewrap needs); the Playground
says which isolation is in use, or that code execution is off on this host and why.
"""

APP = '''"""Start the Visual-ARFT workbench (the Space entry point)."""

import os

{public}from workbench.ui.app import main

if __name__ == "__main__":
    main()
'''


def build_space(out: str | Path, options: SpaceOptions = SpaceOptions()) -> Path:
    """Write a ready Space folder at `out` (replacing what was there); returns its path."""
    out, root = Path(out), settings.REPO_ROOT
    if out.resolve() == root or any(out.resolve().is_relative_to(root / package) for package in CODE_PACKAGES):
        raise SpaceError(f"build the Space outside the code it copies (e.g. under sessions/ or /tmp), not in {out}")
    requirements = runtime_requirements()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    ignore = shutil.ignore_patterns(*LEFT_OUT)
    for package in CODE_PACKAGES:
        shutil.copytree(root / package, out / package, ignore=ignore)
    for folder in LEFT_OUT_DIRS:
        shutil.rmtree(out / folder)
    public = 'os.environ.setdefault("WORKBENCH_PUBLIC_DEMO", "1")\n' if options.public_demo else ""
    (out / "app.py").write_text(APP.format(public=public), encoding="utf-8")
    (out / "requirements.txt").write_text("\n".join(requirements) + "\n", encoding="utf-8")
    shutil.copyfile(root / "packages.txt", out / "packages.txt")
    (out / ".gitattributes").write_text("".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n"
                                                for p in LARGE_FILE_PATTERNS), encoding="utf-8")
    (out / "README.md").write_text(_front_matter(options, requirements) + SPACE_README.format(title=options.title),
                                   encoding="utf-8")
    return out


def _front_matter_of(readme: Path) -> dict[str, str]:
    text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    if not text.startswith("---\n") or "\n---" not in text[4:]:
        return {}
    block = text[4:text.index("\n---", 4)]
    pairs = (line.split(":", 1) for line in block.splitlines() if ":" in line)
    return {key.strip(): value.strip().strip("'\"") for key, value in pairs}


def _large_file_patterns(out: Path) -> list[str]:
    attributes = out / ".gitattributes"
    lines = attributes.read_text(encoding="utf-8").splitlines() if attributes.is_file() else []
    return [line.split()[0] for line in lines if "filter=lfs" in line]


def _python_problems(version: str, requirements: list[str]) -> list[str]:
    """Pinned packages whose installed release (the same version) says it does not run on `version`."""
    problems = []
    for line in requirements:
        requirement = Requirement(line)
        try:
            metadata = importlib.metadata.metadata(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here: nothing to read offline
        if metadata["Version"] not in requirement.specifier:
            continue
        needs = metadata.get("Requires-Python")
        if needs and Version(version + ".0") not in SpecifierSet(needs):
            problems.append(f"{requirement.name} {metadata['Version']} needs Python {needs}, the Space sets "
                            f"python_version {version}")
    return problems


def check_space(out: str | Path) -> list[str]:
    """Every problem that would stop the Space from building or deploying (empty: ready). Works offline.

    Raises SpaceError when `out` is not a folder at all.
    """
    out = Path(out)
    if not out.is_dir():
        raise SpaceError(f"{out} is not a folder; build it first (python -m workbench space build {out})")
    problems = []
    front = _front_matter_of(out / "README.md")
    if not front:
        problems.append("README.md has no front matter (--- block); the Hub needs it to configure the Space")
    problems += [f"README.md front matter has no {key}" for key in FRONT_MATTER_KEYS if front and not front.get(key)]
    if front.get("app_file") and not (out / front["app_file"]).is_file():
        problems.append(f"app_file {front['app_file']} is not in the folder")
    requirements = runtime_requirements(out / "requirements.txt") if (out / "requirements.txt").is_file() else []
    if not requirements:
        problems.append("requirements.txt is missing or empty")
    version = front.get("python_version", "")
    if version:
        if not re.fullmatch(r"3\.\d+", version):
            problems.append(f"python_version {version!r}: give a minor version such as {PYTHON_VERSION!r}")
        else:
            problems += _python_problems(version, requirements)
    large = _large_file_patterns(out)
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        relative = path.relative_to(out).as_posix()
        if relative.startswith("sessions/") or "/sessions/" in relative:
            problems.append(f"{relative}: runtime data from sessions/ must not be shipped")
        if any(fnmatch.fnmatch(path.name, pattern) for pattern in SECRET_NAMES):
            problems.append(f"{relative}: looks like a secret or a database; leave it out")
        size = path.stat().st_size
        if size > HUB_FILE_LIMIT and not any(fnmatch.fnmatch(path.name, pattern) for pattern in large):
            problems.append(f"{relative}: {size / 1e6:.1f} MB is over the Hub's 10 MB limit for plain files and no "
                            ".gitattributes line sends it through large-file storage")
        if size < 5 * 1024 * 1024 and TOKEN_PATTERN.search(path.read_bytes()):
            problems.append(f"{relative}: holds something that looks like an access token; remove it")
    return problems


def deploy_space(out: str | Path, repo: str, *, token: str | None = None, private: bool = False) -> str:
    """Upload a checked Space folder to `repo` (USER/NAME) with huggingface_hub; returns the Space's URL."""
    problems = check_space(out)
    if problems:
        raise SpaceError(f"the Space folder is not ready: {problems[0]} (python -m workbench space check {out})")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo or ""):
        raise SpaceError(f"--repo {repo!r}: give the Space as USER/NAME")
    token = token or os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if not token:
        raise SpaceError("no Hugging Face token: set HF_TOKEN to a token with write access")
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(out), repo_id=repo, repo_type="space",
                          commit_message="Deploy the Visual-ARFT workbench")
    except Exception as exc:  # no network, a refused token, an unknown user; the Hub client's HTTP library varies
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SpaceError(f"could not reach the Hugging Face Hub to deploy {repo}: {reason}") from None
    return str(url)
