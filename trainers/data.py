"""GRPO training data: Visual-ARFT files and benchmark items -> TRL datasets with prompts and images.

Two shapes, one per GRPO mode:
- `StepSample` (mode "steps", the paper's recipe): one trajectory step with
  the chain so far in the prompt. Read from the Visual-ARFT training files:
  search rows (image_path, problem, solution) and coding rows (type
  pre_problem/pre_code/pre_answer, image_path, problem, context, solution,
  gt). `step_rows_from_trace` cuts a recorded episode into such rows.
- `EpisodeItem` (mode "episodes"): a question about an image with its gold
  answers, for multi-turn rollouts where the tools run. Read from MAT-style
  benchmark files (via workbench.benchmarks.loaders) or from training files (one
  item per distinct image + question that has a gold answer).

`build_dataset` makes the `datasets.Dataset` TRL consumes: a conversational
`prompt`, an `image_file` column and the columns the rewards read (`type`,
`solution`, `gt`, `problem_labels`, `input_image`, `clean_image`). TRL puts
the image before the text, as the runner does. Step samples follow the
paper's preprocessing by default (STEP_PREPROCESSING "paper": the image
resized to 720x720, the instructions at the start of the one user turn, as
the released training script builds them); "workbench" keeps the aspect
ratio and puts the instructions in a system message. Images are decoded
lazily, shrunk to the processor's pixel budget and cached.
"""

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from workbench import protocol
from workbench.benchmarks.loaders import load_mat_coding, load_mat_search
from workbench.records import read_json_records
from workbench.trace import Trace

STEP_TYPES = ("pre_problem", "pre_code", "pre_answer", "pre_search")
STEP_PREPROCESSING = ("paper", "workbench")
PAPER_IMAGE_SIZE = (720, 720)  # the released training script resizes every image to this before the processor
_KIND_TOOLS = {"pre_problem": ("code",), "pre_code": ("code",), "pre_answer": ("code",), "pre_search": ("search",)}


class TrainingDataError(ValueError):
    """A training file that cannot be used; the message names the file, row and field."""


@dataclass
class StepSample:
    """One single-turn GRPO sample: the prompt text so far and the expected next action."""

    prompt_text: str
    image_file: str
    solution: str
    type: str | None = None
    gt: list[str] | None = None
    item_id: str | None = None
    tools: tuple[str, ...] = ("code",)


@dataclass
class EpisodeItem:
    """One multi-turn question: image, question, gold answers, and what the rewards may compare."""

    question: str
    image_file: str
    gold: list[str]
    item_id: str | None = None
    problem_labels: list[str] | None = None
    clean_image: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    search_corpus: str | None = None  # this item's own documents (else the job's search_corpus)


def _where(path: Path, position: int) -> str:
    return f"{path.name} row {position}"


def _records(path: str | Path) -> tuple[Path, list[dict]]:
    path = Path(path)
    records = read_json_records(path, TrainingDataError)
    if not isinstance(records, list) or not records:
        raise TrainingDataError(f"{path}: expected a non-empty JSON list (or JSON Lines) of training rows")
    for position, record in enumerate(records):
        if not isinstance(record, dict):
            raise TrainingDataError(f"{_where(path, position)}: expected an object, got {type(record).__name__}")
    return path, records


def _image(root: Path, name: Any, where: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise TrainingDataError(f"{where}: 'image_path' must be a non-empty path")
    primary = Path(name) if Path(name).is_absolute() else root / name
    fallback = root / Path(name).name  # released files carry the authors' own absolute paths
    for candidate in (primary, fallback):
        if candidate.is_file():
            return str(candidate.resolve())
    raise TrainingDataError(f"{where}: image {name!r} not found (looked for {primary}); set image_root to the "
                            "folder holding the images")


def _gold_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str) and v.strip()]
    return []


def is_step_row(record: dict) -> bool:
    """A Visual-ARFT training row (has the expected next action as `solution`)."""
    return isinstance(record.get("solution"), str) and "problem" in record and "image_path" in record


def step_prompt_text(problem: str, context: str | None) -> str:
    """The user text of a step: the question as <query> (unless already tagged) and the chain so far.

    >>> step_prompt_text("What is the title?", "<think>t</think><problem>{'none'}</problem>")
    "<query> What is the title? </query>\\n<think>t</think><problem>{'none'}</problem>"
    """
    text = problem.strip() if "<query>" in problem else protocol.query_text(problem)
    context = (context or "").strip()
    return text + ("\n" + context if context else "")


def load_step_samples(files: list[str], image_root: str | None = None) -> list[StepSample]:
    """Every step row of the given Visual-ARFT training files."""
    samples = []
    for file in files:
        path, records = _records(file)
        root = Path(image_root) if image_root else path.parent
        for position, record in enumerate(records):
            where = _where(path, position)
            if not is_step_row(record):
                raise TrainingDataError(f"{where}: not a Visual-ARFT training row (needs image_path, problem and "
                                        "solution); benchmark items train in mode=episodes")
            kind = record.get("type")
            if kind is not None and kind not in STEP_TYPES:
                raise TrainingDataError(f"{where}: type {kind!r} is unknown; use one of {STEP_TYPES}")
            if not isinstance(record["problem"], str) or not record["problem"].strip():
                raise TrainingDataError(f"{where}: 'problem' must be the question text")
            gold = _gold_list(record.get("gt"))
            samples.append(StepSample(
                prompt_text=step_prompt_text(record["problem"], record.get("context")),
                image_file=_image(root, record["image_path"], where), solution=record["solution"],
                type=record.get("type"), gt=gold or None, item_id=str(record.get("id", f"{path.stem}:{position}")),
                tools=_KIND_TOOLS[kind or "pre_search"]))  # rows without a type come from the search file
    return samples


def _episodes_from_step_rows(path: Path, records: list[dict], root: Path) -> list[EpisodeItem]:
    grouped: dict[tuple[str, str], EpisodeItem] = OrderedDict()
    for position, record in enumerate(records):
        where = _where(path, position)
        if not is_step_row(record):
            raise TrainingDataError(f"{where}: mixes training rows with other records; keep one format per file")
        image = _image(root, record["image_path"], where)
        question = record["problem"].strip()
        item = grouped.setdefault((image, question), EpisodeItem(question, image, [],
                                                                 item_id=f"{path.stem}:{position}"))
        answer = protocol.parse_turn(record["solution"]).argument if "<answer>" in record["solution"] else None
        for gold in _gold_list(record.get("gt")) + ([answer] if answer else []):
            if gold not in item.gold:
                item.gold.append(gold)
        if "<problem>" in record["solution"]:
            item.problem_labels = protocol.parse_problem_labels(
                protocol.parse_turn(record["solution"]).argument or "")[0]
    return [item for item in grouped.values() if item.gold]


def load_episode_items(files: list[str], image_root: str | None = None) -> list[EpisodeItem]:
    """Questions for multi-turn episodes from benchmark files or training files."""
    items: list[EpisodeItem] = []
    for file in files:
        path, records = _records(file)
        root = Path(image_root) if image_root else path.parent
        first = records[0]
        if is_step_row(first):
            found = _episodes_from_step_rows(path, records, root)
        elif "processed_image_path" in first or "ori_image_path" in first:
            found = [EpisodeItem(b.question, str(b.image), b.answers, item_id=b.id, problem_labels=b.types,
                                 clean_image=str(b.clean_image) if b.clean_image else None,
                                 metadata={"split": b.split})
                     for b in load_mat_coding(path, root)]
        elif "image_path" in first and "question" in first:
            found = [EpisodeItem(b.question, str(b.image), b.answers, item_id=b.id, metadata={"split": b.split},
                                 search_corpus=str(b.corpus) if b.corpus else None)
                     for b in load_mat_search(path, root)]
        else:
            raise TrainingDataError(f"{path}: rows are neither Visual-ARFT training rows (image_path, problem, "
                                    "solution) nor MAT items (question, answers, image paths)")
        if not found:
            raise TrainingDataError(f"{path}: no row has a gold answer, so episodes cannot be scored")
        items += found
    return items


def step_rows_from_trace(trace: Trace, image_path: str) -> list[dict[str, Any]]:
    """Cut a recorded coding/search episode into Visual-ARFT training rows (one per turn).

    The context of turn k is the raw text and feedback of turns before k, as
    the paper's runner keeps the chain.
    """
    rows, chain = [], ""
    kinds = {"problem": "pre_problem", "code": "pre_code", "answer": "pre_answer", "search": "pre_search"}
    for turn in trace.turns:
        if turn.action not in kinds or turn.parse_error:
            break
        row = {"type": kinds[turn.action], "image_path": image_path, "problem": trace.question, "context": chain,
               "solution": turn.raw, "gt": list(trace.gold)}
        if turn.action == "search":
            row.pop("type")
        rows.append(row)
        chain += turn.raw + (turn.feedback or "")
    return rows


class ImageCache:
    """Decoded RGB images (resized to `size` first, if given) shrunk to the pixel budget, kept for reuse (LRU)."""

    def __init__(self, max_pixels: int, capacity: int = 512, size: tuple[int, int] | None = None):
        self.max_pixels = max_pixels
        self.capacity = capacity
        self.size = size
        self._images: OrderedDict[str, Image.Image] = OrderedDict()

    def get(self, path: str) -> Image.Image:
        image = self._images.get(path)
        if image is None:
            with Image.open(path) as opened:
                image = opened.convert("RGB")
            if self.size is not None:
                image = image.resize(self.size)  # Pillow's default filter, as the released script calls it
            area = image.width * image.height
            if self.max_pixels and area > self.max_pixels:
                scale = math.sqrt(self.max_pixels / area)
                image = image.resize((max(28, round(image.width * scale)), max(28, round(image.height * scale))),
                                     Image.Resampling.BICUBIC)
            self._images[path] = image
            if len(self._images) > self.capacity:
                self._images.popitem(last=False)
        self._images.move_to_end(path)
        return image


def _step_row(sample: StepSample, preprocessing: str = "paper") -> dict[str, Any]:
    system = protocol.system_prompt(sample.tools, "tags")
    if preprocessing == "paper":  # the released script: instructions + "\n" + the step's text, one user turn
        prompt = [{"role": "user", "content": system + "\n" + sample.prompt_text}]
    else:
        prompt = [{"role": "system", "content": system}, {"role": "user", "content": sample.prompt_text}]
    return {"prompt": prompt,
            "image_file": sample.image_file, "input_image": sample.image_file, "type": sample.type,
            "solution": sample.solution, "gt": sample.gt, "item_id": sample.item_id}


def _episode_row(item: EpisodeItem, system: str) -> dict[str, Any]:
    return {"prompt": [{"role": "system", "content": system},
                       {"role": "user", "content": protocol.query_text(item.question)}],
            "image_file": item.image_file, "input_image": item.image_file, "question": item.question,
            "gt": item.gold, "problem_labels": item.problem_labels, "clean_image": item.clean_image,
            "item_id": item.item_id, "search_corpus": item.search_corpus}


def build_dataset(samples: list[StepSample] | list[EpisodeItem], *, max_pixels: int, system: str | None = None,
                  preprocessing: str = "paper"):
    """The TRL dataset: step samples (with `preprocessing`), or episode items with the episode system prompt."""
    from datasets import Dataset

    if not samples:
        raise TrainingDataError("no training rows left; check data_files and max_items")
    if preprocessing not in STEP_PREPROCESSING:
        raise ValueError(f"preprocessing {preprocessing!r} is unknown; use one of {STEP_PREPROCESSING}")
    steps = isinstance(samples[0], StepSample)
    if steps:
        rows = [_step_row(s, preprocessing) for s in samples]
    else:
        if system is None:
            raise ValueError("episode datasets need the system prompt of the rollout")
        rows = [_episode_row(item, system) for item in samples]
    dataset = Dataset.from_list(rows)
    cache = ImageCache(max_pixels, size=PAPER_IMAGE_SIZE if steps and preprocessing == "paper" else None)

    def with_images(batch: dict[str, list]) -> dict[str, list]:
        batch["image"] = [cache.get(path) for path in batch["image_file"]]
        return batch

    return dataset.with_transform(with_images)
