"""Demo images for the Playground: the shipped held-out demo items (workbench/demo/items).

One MAT-Coding-mini item per kind of problem (each degradation, a pair, a
crop box on the protocol's 0..1000 scale) and one MAT-Search-mini item per
kind of question; each comes with its question and the tool it needs. The
shipped search corpus (the held-out world's) backs the search tool when no
other corpus is given. `python -m workbench.synth.demo_assets` remakes them.
"""

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from workbench import settings


@dataclass(frozen=True)
class DemoImage:
    """A demo picture, the question to ask about it, and the tool that question needs."""

    name: str
    question: str
    path: Path
    tool: str
    answer: str
    problems: tuple[str, ...] = ()  # the degradation labels of a coding item (its gold <problem>)


def _load(path: Path, tool: str) -> list[DemoImage]:
    if not path.is_file():
        return []
    demos = []
    for record in json.loads(path.read_text(encoding="utf-8")):
        if tool == "code":
            # crop questions are asked on the original image (MAT-Coding's rule); the others on the degraded one
            image = record["ori_image_path"] if record["type"] == ["crop"] else record["processed_image_path"]
            name = f"{' + '.join(record['type'])}: {record['question']}"
            answer, problems = record["answers"][0], tuple(record["type"])
        else:
            image, name = record["image_path"], f"search: {record['question']}"
            answer, problems = record["answer"][0], ()
        demos.append(DemoImage(name, record["question"], path.parent / image, tool, answer, problems))
    return demos


@cache
def demo_images() -> dict[str, DemoImage]:
    return {demo.name: demo for demo in _load(settings.DEMO_CODING_ITEMS, "code") + _load(settings.DEMO_SEARCH_ITEMS,
                                                                                        "search")}


def demo_names() -> list[str]:
    return list(demo_images())


def demo_image(name: str) -> DemoImage:
    demos = demo_images()
    if name not in demos:
        raise KeyError(f"no demo image {name!r}; choose one of {', '.join(demos)}")
    return demos[name]


def demo_image_path(name: str) -> Path:
    """The demo picture's file."""
    return demo_image(name).path


def demo_corpus() -> Path:
    """The search corpus the demo search questions are answered from."""
    return settings.DEMO_CORPUS
