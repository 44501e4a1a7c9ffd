"""The offline demo world: generated benchmarks, a search corpus, and expert traces for SFT.

`build_world` writes MAT-Coding-mini and MAT-Search-mini train and held-out
splits plus the corpus. `record_expert_traces` replays the scripted expert's
turns through the real agent runner (real sandbox, real local search) and
stores them as one run, each episode scored: the cold-start SFT data for
the demo model. A quarter of the coding items are also recorded with no
tools offered (the expert answers at once), so the model knows how to answer
when asked without tools and the with/without-tools comparison is fair.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from workbench.agent.runner import AgentItem, AgentRunner, RunnerConfig
from workbench.agent.tools import build_tools
from workbench.backends.replay import ReplayBackend
from workbench.benchmarks import mat_coding_mini, mat_search_mini, mini_expert
from workbench.benchmarks.loaders import load_benchmark
from workbench.benchmarks.scoring import f1_em
from workbench.protocol import find_box
from workbench.store import Store

SEARCH_RL_SEED_OFFSET = 3000  # the search "rl" split's worlds (3000..), clear of held-out 1000 and drills 5000..


@dataclass
class World:
    """Where the generated files of one demo world are."""

    root: Path

    def coding(self, split: str) -> Path:
        return self.root / f"coding_{split}" / "mat_coding_mini.json"

    def hidden(self, split: str) -> Path:
        """The click-to-train task's items (mat_coding_mini.generate_hidden_colours) of `split`."""
        return self.root / f"hidden_{split}" / "mat_coding_mini.json"

    def search(self, split: str) -> Path:
        return self.root / f"search_{split}" / "mat_search_mini.json"

    def corpus(self, split: str = "train") -> Path:
        return self.root / f"search_{split}" / "corpus.jsonl"

    def search_drill(self, name: str = "search_drill") -> Path:
        return self.root / name / "mat_search_mini.json"


def build_world(root: str | Path, *, coding_train: int = 800, coding_test: int = 100, coding_rl: int = 400,
                search_train: int = 600, search_test: int = 60, search_worlds: int = 100, search_rl: int = 400,
                hidden_train: int = 400, hidden_test: int = 40, hidden_rl: int = 400, seed: int = 0) -> World:
    """Generate train and held-out splits (different seeds) of both benchmarks and the corpora.

    The "rl" splits (other seeds) hold GRPO's prompts: items the SFT stages
    never saw, so the policy is not rewarded for what it memorised. Search rl
    questions come from `search_worlds` more worlds, each question naming its
    corpus, as the train split's do.

    Train search questions come from `search_worlds` small worlds (each with
    its own corpus), so the expert traces can only be imitated by reading the
    search results, not by memorising companies.
    """
    world = World(Path(root))
    for split, count in (("train", coding_train), ("test", coding_test), ("rl", coding_rl)):
        mat_coding_mini.generate(world.coding(split).parent, count, seed=seed + mat_coding_mini.SPLIT_SEEDS[split])
    for split, count in (("train", hidden_train), ("test", hidden_test), ("rl", hidden_rl)):
        mat_coding_mini.generate_hidden_colours(world.hidden(split).parent, count,
                                                seed=mat_coding_mini.hidden_split_seed(split, seed))
    mat_search_mini.generate(world.search("train").parent, search_train, seed=seed, worlds=search_worlds)
    # Held-out search questions come from an unseen world (its own companies and corpus): their answers
    # cannot be memorised from the training traces, only found by searching.
    mat_search_mini.generate(world.search("test").parent, search_test, seed=seed + 1000)
    mat_search_mini.generate(world.search("rl").parent, search_rl, seed=seed + SEARCH_RL_SEED_OFFSET,
                             worlds=search_worlds)
    return world


def _coding_episodes(path: Path) -> tuple[list[AgentItem], dict]:
    items, turns = [], {}
    for item in load_benchmark("mat-coding", path):
        box = list(find_box(item.question) or ()) or None
        agent_item = AgentItem(item.question, [item.image], item_id=f"coding-{item.id}", gold=item.answers,
                               metadata={"types": item.types, "split": item.split, "benchmark": "mat-coding"})
        items.append(agent_item)
        turns[(item.question, _sha(item.image))] = mini_expert.coding_turns(item.types, item.answers[0], box)
    return items, turns


def _direct_episodes(items: list[AgentItem]) -> tuple[list[AgentItem], dict]:
    """Every fourth coding item again, with no tools: the expert answers from the image as it is."""
    direct, turns = [], {}
    for item in items[::4]:
        direct.append(AgentItem(item.question, item.images, item_id=f"{item.item_id}-direct", gold=item.gold,
                                metadata={**item.metadata, "tools": "none"}))
        turns[(item.question, _sha(item.images[0]))] = mini_expert.direct_turns(item.gold[0])
    return direct, turns


def _search_episodes(path: Path) -> dict[str, tuple[list[AgentItem], dict]]:
    """Expert search episodes grouped by the corpus each question's world lives in."""
    records = {str(r["id"]): r for r in json.loads(path.read_text(encoding="utf-8"))}
    worlds: dict[int, dict[str, mat_search_mini.Company]] = {}
    by_corpus: dict[str, tuple[list[AgentItem], dict]] = {}
    for item in load_benchmark("mat-search", path):
        record = records[item.id]
        seed = record["world_seed"]
        if seed not in worlds:
            worlds[seed] = {c.name: c for c in mat_search_mini.build_world(seed)}
        items, turns = by_corpus.setdefault(record["corpus"], ([], {}))
        items.append(AgentItem(item.question, [item.image], item_id=f"search-{item.id}", gold=item.answers,
                               metadata={"split": item.split, "benchmark": "mat-search"}))
        turns[(item.question, _sha(item.image))] = mini_expert.search_turns(
            worlds[seed][record["company"]], record["kind"], item.answers[0])
    return by_corpus


def _sha(path: Path) -> str:
    from workbench.images import put_image

    return put_image(path).sha


def build_search_drill(world: World, count: int = 2400, worlds: int = 400, seed: int = 5000,
                       name: str = "search_drill") -> Path:
    """Extra search questions from many more small worlds (seeds `seed` ..), in the folder `name`: the data
    of the demo model's search SFT stages. Seeds stay clear of the train (0..), held-out (1000) and
    tokenizer (10000..) worlds."""
    questions, _ = mat_search_mini.generate(world.search_drill(name).parent, count, seed=seed, worlds=worlds)
    return questions


def record_expert_traces(world: World, store: Store, *, coding: bool = True,
                         search_file: Path | None = None, name: str = "expert traces (SFT data)") -> str:
    """Run the expert through the real tools (coding train split unless coding=False, and the search
    questions of `search_file`, default the search train split); store the episodes, scored, as a run."""
    search_file = search_file or world.search("train")
    run_id = store.create_run(name, "imported", config={"source": "workbench.benchmarks.mini_expert",
                                                        "world": str(world.root),
                                                         "search": str(search_file)})
    # Tools are built per job, when it runs: a drill has a corpus per world, and a search tool per corpus
    # alive at once ran the process out of file descriptors.
    jobs = []  # (items, expert turns, tool names, search corpus)
    if coding:
        coding_items, coding_turns = _coding_episodes(world.coding("train"))
        direct_items, direct_turns = _direct_episodes(coding_items)
        jobs += [(coding_items, coding_turns, ("code",), None), (direct_items, direct_turns, (), None)]
    for corpus, (items, turns) in sorted(_search_episodes(search_file).items()):
        jobs.append((items, turns, ("search",), search_file.parent / corpus))
    return _replay(store, run_id, jobs)


def record_start_traces(world: World, store: Store, *, direct_share: float, seed: int = 0,
                        name: str = "expert traces (click-to-train start)") -> str:
    """The click-to-train task's train split with the code tool offered, where the expert answers at once,
    from the image as it is, on `direct_share` of the items (drawn with `seed`) and repairs the image first
    on the rest: the SFT data of the click-to-train start adapter, a policy that knows its tool but mostly
    does not call it."""
    import random

    items, turns = _coding_episodes(world.hidden("train"))
    for position in random.Random(seed).sample(range(len(items)), round(direct_share * len(items))):
        item = items[position]
        turns[(item.question, _sha(item.images[0]))] = mini_expert.direct_turns(item.gold[0])
    run_id = store.create_run(name, "imported", config={"source": "workbench.benchmarks.mini_expert",
                                                        "world": str(world.root), "direct_share": direct_share,
                                                        "seed": seed})
    return _replay(store, run_id, [(items, turns, ("code",), None)])


def _replay(store: Store, run_id: str, jobs: list[tuple[list[AgentItem], dict, tuple[str, ...], Path | None]]) -> str:
    """Replay each job's expert turns (items, turns, tool names, search corpus) into run `run_id`."""
    kept = episodes = 0
    for items, turns, names, corpus in jobs:
        tools = build_tools(names, corpus=corpus)
        config = RunnerConfig(tools=tuple(tools), layout="chat", max_turns=5)
        runner = AgentRunner(ReplayBackend(turns, model_id="expert"), tools, config, store=store, run_id=run_id,
                             score=_score)
        for start in range(0, len(items), 64):
            traces = runner.run(items[start:start + 64])
            kept += sum(1 for t in traces if t.rewards.get("em") == 1.0)
        episodes += len(items)
    store.update_run(run_id, status="succeeded", summary={"episodes": episodes,
                                                          "correct": kept})
    return run_id


def _score(trace, item) -> dict[str, float]:
    f1, em = f1_em(trace.final_answer, item.gold, "mat-coding")
    tools_ok = all(t.tool_call.ok for t in trace.turns if t.tool_call)
    return {"f1": f1, "em": em, "tools_ok": float(tools_ok), "total": em * float(tools_ok)}
