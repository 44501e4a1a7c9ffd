"""Shipped example runs, so a fresh (or public-demo) workbench has something to explore.

Creates, once, under fixed run ids and marked `config.demo = True` (visible to
every public-demo visitor):
- a scripted coding episode on the upside-down demo sign: <problem>, <code>
  that rotates the image (the "after" image is that rotation), <answer>;
- a scripted GRPO group of four samples on the dark demo label, scored with
  the project's real format check and answer F1, with group-normalised
  advantages as GRPO computes them;
Training curves come only from real runs (the tests make their own metric
rows in tests/ui_fixtures.py). Nothing here pretends to be a real model's output: names say "scripted" and
"synthetic".
"""

import statistics

from PIL import Image

from workbench.images import image_path
from workbench.rewards_text import turn_is_well_formed
from workbench.scoring import f1_em
from workbench.store import Store
from workbench.trace import ToolCall, Trace, Turn
from workbench.ui.assets import DEMO_IMAGES, demo_image_path

EPISODE_RUN = "demo-episode"
GROUP_RUN = "demo-group"
ROTATE_CODE = ("```python\nfrom PIL import Image\nimage = Image.open('path_to_input_image.jpg')\n"
               "image.rotate(180).save('path_to_output_image.jpg')\nprint(image.size)\n```")


def _turn(index: int, think: str, action: str, argument: str, image: str, **extra) -> Turn:
    raw = f"<think> {think} </think>\n<{action}> {argument} </{action}>"
    return Turn(index=index, raw=raw, think=think, action=action, argument=argument, image=image,
                completion_tokens=len(raw.split()), **extra)


def _scored(trace: Trace, gold: list[str]) -> dict[str, float]:
    f1, _ = f1_em(trace.final_answer, gold, "mat-coding")
    well_formed = all(turn_is_well_formed(t.raw) for t in trace.turns)
    rewards = {"format": 1.0 if well_formed else 0.0, "accuracy": f1}
    rewards["total"] = rewards["format"] + rewards["accuracy"]
    return rewards


def _episode(store: Store) -> Trace:
    demo = DEMO_IMAGES["upside-down sign"]
    source = demo_image_path(demo.name)
    sha = store.put_image(source)
    rotated = store.put_image(Image.open(image_path(sha)).rotate(180))
    turns = [
        _turn(0, "The text on the sign is upside down.", "problem", "{'rotation180'}", sha,
              feedback="<tips> Write Python code that fixes the named problems of the image. </tips>"),
        _turn(1, "Rotate the image by 180 degrees.", "code", ROTATE_CODE, sha,
              tool_call=ToolCall(name="code", argument=ROTATE_CODE, output_images=[rotated], stdout="(480, 320)\n",
                                 latency_s=0.02)),
        _turn(2, "Now the sign reads OPEN 24H.", "answer", "OPEN 24H", rotated),
    ]
    trace = Trace(question=demo.question, images=[sha], turns=turns, final_answer="OPEN 24H",
                  stop_reason="answered", gold=["OPEN 24H"], model_id="scripted example", run_id=EPISODE_RUN,
                  item_id="demo-sign", group_id=f"{EPISODE_RUN}:demo-sign", duration_s=0.1)
    trace.rewards = _scored(trace, trace.gold)
    return trace


def _group(store: Store) -> list[Trace]:
    demo = DEMO_IMAGES["dark label"]
    sha = store.put_image(demo_image_path(demo.name))
    gold = ["EXIT 7"]
    endings = [("The label is too dark; brightening shows EXIT 7.", "EXIT 7"),
               ("It is dark but I can guess.", "EXIT"),
               ("Looks like a door sign.", "DOOR"),
               (None, None)]
    traces = []
    for sample, (think, answer) in enumerate(endings):
        if think is None:
            turns = [Turn(index=0, raw="<think> dark image <answer> EXIT", think=None,
                          parse_error="<answer> is never closed (the turn may have hit the token limit)", image=sha)]
            stop = "parse_error"
        else:
            turns = [_turn(0, think, "answer", answer, sha)]
            stop = "answered"
        traces.append(Trace(question=demo.question, images=[sha], turns=turns, final_answer=answer,
                            stop_reason=stop, gold=gold, model_id="scripted example", run_id=GROUP_RUN,
                            item_id="demo-label", group_id=f"{GROUP_RUN}:demo-label", sample_index=sample,
                            step=0, duration_s=0.05))
    for trace in traces:
        trace.rewards = _scored(trace, gold)
    totals = [t.rewards["total"] for t in traces]
    mean, spread = statistics.fmean(totals), statistics.pstdev(totals)
    for trace in traces:  # GRPO: reward minus the group mean, over the group's standard deviation
        trace.advantage = (trace.rewards["total"] - mean) / (spread + 1e-4)
    return traces


def seed_demo_runs(store: Store) -> list[str]:
    """Create the example runs that are missing; returns all their run ids."""
    if store.get_run(EPISODE_RUN) is None:
        store.create_run("example: scripted coding episode", "imported", run_id=EPISODE_RUN, status="succeeded",
                         model_id="scripted example", config={"demo": True, "source": "scripted example"})
        store.save_traces([_episode(store)])
    if store.get_run(GROUP_RUN) is None:
        store.create_run("example: scripted GRPO group", "imported", run_id=GROUP_RUN, status="succeeded",
                         model_id="scripted example", config={"demo": True, "source": "scripted example"})
        store.save_traces(_group(store))
    return [EPISODE_RUN, GROUP_RUN]
