"""The paper's own artifacts against the workbench, with the paper's own code as the anchor in the same run.

Reads the Visual-ARFT repository (no work tree needed: a git directory is
read with `git show`), path by argument or VISUAL_RFT_REPO, default
/work/.mirror/Liuziyu77+Visual-RFT/repo; skips with a message when absent.
Nothing from it is kept: its files are read into a temporary folder per run.

1. Result files: every released file (evaluation_*/evaluation_results) is
   scored by the workbench (`load_predictions` + `score_predictions`) and by
   the paper's scorer, whose functions are taken from its evaluation
   notebooks (only the function definitions are executed); every figure and
   every item must agree to 0.01 points.
2. Demo episodes: the chains of the demo notebooks' 8 episodes are rebuilt as
   the released runner builds them (its system prompt, `<query> Q <query>`,
   each printed model output, its `<tips>` and `<information>` text) and
   imported with `rerun_code`; every turn must equal the printed output byte
   for byte, every tips/information block must be kept, every code turn must
   have an output image, and export + re-import must be lossless.
3. Rewards: the `paper` preset against the released reward functions (the
   definitions of grpo_agent_code.py / grpo_agent_search.py, with the
   similarity model pointed at the local all-MiniLM-L6-v2) on the
   PROTOCOL.md case table, generated variants of it, and the demo turns
   scored against each other; every value must be equal.

Exits non-zero when a target is missed. Run: python bench/bench_paper_artifacts.py [REPO] [--quick] [--json]
(--quick changes nothing: the bench takes about half a minute).
"""

import ast
import json
import math
import os
import re
import string
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

os.environ.setdefault("WORKBENCH_HOME", tempfile.mkdtemp(prefix="bench-paper-"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import Figure, finish

DEFAULT_REPO = "/work/.mirror/Liuziyu77+Visual-RFT/repo"
FOLDER = "Visual-ARFT"
TOLERANCE = 0.01  # points
SCORER_NOTEBOOKS = {"mat-coding": "evaluation_coding/evaluation.ipynb",
                    "mat-search": "evaluation_search/MAT-Search-Benchmark/evaluation.ipynb",
                    "multihop": "evaluation_search/traditional_benchmark/evaluation.ipynb"}
REWARD_SCRIPTS = {"code": "src/visual_arft/src/open_r1/grpo_agent_code.py",
                  "search": "src/visual_arft/src/open_r1/grpo_agent_search.py"}


class Repo:
    """Read-only access to the paper's repository, a git directory or a work tree."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.git = not (self.path / FOLDER).is_dir()

    def exists(self) -> bool:
        if not self.git:
            return True
        return subprocess.run(["git", "-C", str(self.path), "rev-parse", "HEAD"], capture_output=True).returncode == 0

    def files(self) -> list[str]:
        if not self.git:
            return [str(p.relative_to(self.path / FOLDER)) for p in (self.path / FOLDER).rglob("*") if p.is_file()]
        listing = subprocess.run(["git", "-C", str(self.path), "ls-tree", "-r", "--name-only", "HEAD", FOLDER],
                                 capture_output=True, text=True, check=True).stdout
        return [line[len(FOLDER) + 1:] for line in listing.splitlines()]

    def read(self, name: str) -> bytes:
        if not self.git:
            return (self.path / FOLDER / name).read_bytes()
        return subprocess.run(["git", "-C", str(self.path), "show", f"HEAD:{FOLDER}/{name}"], capture_output=True,
                              check=True).stdout

    def text(self, name: str) -> str:
        return self.read(name).decode("utf-8")


def functions_of(source: str, names: set[str], namespace: dict) -> dict:
    """Execute only the named top-level function definitions of `source` in `namespace` (imports stubbed out)."""
    tree = ast.parse(source)
    chosen = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name in names]
    missing = names - {node.name for node in chosen}
    if missing:
        raise RuntimeError(f"the paper's code has no {sorted(missing)}")
    exec(compile(ast.Module(body=chosen, type_ignores=[]), "<paper>", "exec"), namespace)
    return namespace


def notebook_cells(repo: Repo, name: str) -> list[dict]:
    return json.loads(repo.text(name))["cells"]


# ------------------------------------------------------------------------------------------ 1. result files


def paper_scores(repo: Repo, benchmark: str, items: list[dict]) -> tuple[dict[str, float], list[float]]:
    """The paper's figures (percent) and per-item F1 for one result file, by its own scorer functions."""
    source = "".join(notebook_cells(repo, SCORER_NOTEBOOKS[benchmark])[0]["source"])
    wanted = {"normalize", "compute_f1", "exact_match_score"}
    wanted |= {"is_chinese"} if benchmark == "mat-coding" else {"evaluate"}
    paper = functions_of(source, wanted, {"re": re, "string": string})
    per_item_f1, per_item_em = [], []
    for item in items:  # the per-item rule of all three notebooks: max over golds, EM = 1 forces F1 = 1
        golds = [item["gt"]] if isinstance(item["gt"], str) else item["gt"]
        f1 = max(paper["compute_f1"](item["pred_answer"], gold) for gold in golds)
        em = max(paper["exact_match_score"](item["pred_answer"], gold) for gold in golds)
        per_item_f1.append(1 if em == 1 else f1)
        per_item_em.append(em)
    if benchmark == "mat-coding":  # the notebook's own cell: fixed 70 / 130 / 200 divisors
        figures = {"simple_f1": sum(per_item_f1[:70]) / 70, "simple_em": sum(per_item_em[:70]) / 70,
                   "hard_f1": sum(per_item_f1[70:]) / 130, "hard_em": sum(per_item_em[70:]) / 130,
                   "all_f1": sum(per_item_f1) / 200, "all_em": sum(per_item_em) / 200}
    else:
        result = paper["evaluate"](items)
        figures = {"all_f1": result["avg_f1"], "all_em": result["avg_em"]}
        if benchmark == "mat-search":
            figures.update({key: result[key] for key in ("simple_f1", "simple_em", "hard_f1", "hard_em")})
    return {key: 100 * value for key, value in figures.items()}, per_item_f1


def bench_result_files(repo: Repo, workdir: Path) -> bool:
    from workbench.benchmarks.scoring import load_predictions, score_predictions

    names = sorted(n for n in repo.files() if "/evaluation_results/" in n and n.endswith(".json"))
    print(f"\n1. Released result files: {len(names)} (target: all load, every figure within {TOLERANCE} of the "
          f"paper's scorer, per item too)")
    ok_files = 0
    for name in names:
        benchmark = ("mat-coding" if name.startswith("evaluation_coding") else
                     "mat-search" if "/MAT-Search/" in name else "multihop")
        path = workdir / Path(name).name
        path.write_bytes(repo.read(name))
        items = json.loads(path.read_text(encoding="utf-8"))
        anchor, anchor_items = paper_scores(repo, benchmark, items)
        try:
            report = score_predictions(load_predictions(path), benchmark)
        except ValueError as exc:
            print(f"   FAIL {name}: refused: {exc}")
            continue
        ours = {key: getattr(report, key) for key in anchor}
        worst = max(abs(ours[key] - anchor[key]) for key in anchor)
        worst_item = max(abs(100 * s.f1 - 100 * a) for s, a in zip(report.per_item, anchor_items))
        good = worst <= TOLERANCE and worst_item <= TOLERANCE and report.n == len(items)
        ok_files += good
        shown = " ".join(f"{key} {ours[key]:.2f}/{anchor[key]:.2f}" for key in anchor)
        note = f" [{report.notes[0]}]" if report.notes else ""
        print(f"   {'ok  ' if good else 'FAIL'} {Path(name).parent.name}/{Path(name).name} n={report.n} "
              f"(ours/paper) {shown}; max diff {worst:.4f}, per item {worst_item:.4f}{note}")
    print(f"   => {ok_files}/{len(names)} files score to {TOLERANCE} of the paper's scorer")
    return ok_files == len(names)


# ------------------------------------------------------------------------------------------ 2. demo episodes


def _printed_results(block: str) -> list[str]:
    """The model outputs printed in one episode, each without print's newline."""
    starts = [m.start() for m in re.finditer(r"(?:^|\n)<think>", block)]
    results = []
    for index, start in enumerate(starts):
        start += block[start] == "\n"
        end = starts[index + 1] if index + 1 < len(starts) else len(block)
        results.append(block[start:end].removesuffix("\n"))
    return results


def coding_episodes(repo: Repo, workdir: Path) -> list[dict]:
    """The 6 coding episodes as the released runner's chains, from the demo notebook's printed outputs."""
    cells = notebook_cells(repo, "demo/coding_demo.ipynb")
    namespace: dict = {}
    exec("".join(cells[1]["source"]), namespace)  # the cell only assigns the runner's system prompt
    system_prompt = namespace["system_prompt"]
    runner = next("".join(c["source"]) for c in cells if "input_text = system_prompt" in "".join(c["source"]))
    crop_tips, none_tips, fix_tips = re.findall(r"f'(<tips>.*?</tips>)'", runner)
    output = next(c for c in cells if "input_text = system_prompt" in "".join(c["source"]))["outputs"]
    printed = "".join("".join(o["text"]) for o in output if o.get("output_type") == "stream" and "it/s]" not in
                      "".join(o["text"]) and "s/it]" not in "".join(o["text"]))
    cases = json.loads(repo.text("demo/cases/coding_case.json"))
    blocks = [b for b in printed.split("#" * 40 + "\n") if "<query>" in b]
    episodes = []
    for case, block in zip(cases, blocks, strict=True):
        block = block.split("\n", 1)[1].split("Ground Truth:")[0]  # drop the printed question and the scores
        results = _printed_results(block)
        chain, feedback = system_prompt + f"<query> {case['question']} <query>", []
        for result in results[:-1]:
            if "<problem>" in result:
                labels = sorted(re.findall(r"'([^']+)'", re.search(r"<problem>\s*\{(.*?)\}", result, re.S).group(1)))
                if labels[0] == "crop":
                    tips, tail = crop_tips, "\n"
                elif labels[0] == "none":
                    tips, tail = none_tips, ""
                else:
                    tips, tail = fix_tips.replace("{problems_list}", str(labels)), "\n"
                chain += "\n" + result + "\n" + tips + tail
                feedback.append(tips)
            else:
                chain += "\n" + result
        chain += "\n" + results[-1]
        image = case["ori_image_path"] if case["type"][0] == "crop" else case["processed_image_path"]
        (workdir / image).write_bytes(repo.read(f"demo/cases/{image}"))
        episodes.append({"record": {"id": case["id"], "chain": chain, "image": image, "answers": case["answers"],
                                    "type": case["type"], "split": case["split"]},
                         "results": results, "feedback": feedback})
    return episodes


def search_episodes(repo: Repo, workdir: Path) -> list[dict]:
    """The 2 search episodes as the released runner's chains, with the search results it printed."""
    cells = notebook_cells(repo, "demo/search_demo.ipynb")
    namespace: dict = {}
    exec("".join(next(c["source"] for c in cells if "".join(c["source"]).startswith("system_prompt"))), namespace)
    system_prompt = namespace["system_prompt"]
    episodes = []
    for cell in cells:
        source = "".join(cell["source"])
        if "web_search_SERPER_API(" not in source or cell["cell_type"] != "code" or not cell.get("outputs"):
            continue
        query = re.search(r"^query = '(.*)'$", source, re.M).group(1)
        image = Path(re.search(r"^input_image_path = '(.*)'$", source, re.M).group(1)).name
        printed = "".join("".join(o["text"]) for o in cell["outputs"] if o.get("output_type") == "stream")
        results = re.findall(r"\x1b\[93m(.*?)\x1b\[0m", printed, re.S)
        hits = [ast.literal_eval(line) for line in printed.splitlines() if line.startswith("[{'title'")]
        chain, feedback = system_prompt + "\n" + f"<query> {query} <query>", []
        for result, found in zip(results[:-1], hits, strict=True):
            information = "<information> " + "".join(f"{i + 1}. Content:{hit['body']}" for i, hit in enumerate(found))
            information += " </information> "
            chain += "\n" + result + "\n" + information
            feedback.append(information.strip())
        chain += "\n" + results[-1]
        (workdir / image).write_bytes(repo.read(f"demo/cases/{image}"))
        episodes.append({"record": {"id": image, "chain": chain, "image": image},
                         "results": results, "feedback": feedback})
    return episodes


def bench_demo_episodes(repo: Repo, workdir: Path) -> bool:
    from workbench.chains import import_chains
    from workbench.store import Store
    from workbench.trace_io import export_traces, import_traces

    episodes = coding_episodes(repo, workdir) + search_episodes(repo, workdir)
    (workdir / "chains.json").write_text(json.dumps([e["record"] for e in episodes], ensure_ascii=False))
    print(f"\n2. Demo episodes: {len(episodes)} (target: 8; every turn byte-exact vs the notebooks' printed outputs, "
          "every tips/information block and code block kept, every code turn with an output image, lossless "
          "export + re-import)")
    store = Store()
    result = import_chains(store, workdir / "chains.json", "paper demos", rerun_code=True)
    print(f"   {result.summary()}")
    traces = [store.get_trace(trace_id) for trace_id in result.trace_ids]
    turns = exact = code = code_images = blocks = blocks_kept = code_blocks = 0
    for episode, trace in zip(episodes, traces):
        results = episode["results"]
        turns += len(results)
        exact += sum(t.raw == r for t, r in zip(trace.turns, results)) if len(trace.turns) == len(results) else 0
        kept = [t.feedback for t in trace.turns if t.feedback]
        blocks += len(episode["feedback"])
        blocks_kept += sum(a == b for a, b in zip(kept, episode["feedback"])) if len(kept) == len(episode[
            "feedback"]) else 0
        for turn, printed in zip(trace.turns, results):
            if turn.action == "code":
                code += 1
                code_images += bool(turn.tool_call and turn.tool_call.output_images)
                code_blocks += f"<code>{printed.split('<code>', 1)[1].rsplit('</code>', 1)[0]}</code>".find(
                    turn.argument) >= 0
    path = workdir / "export" / "traces.jsonl"
    path.parent.mkdir()
    export_traces(store, traces, path)
    os.environ["WORKBENCH_HOME"] = str(workdir / "fresh-home")
    again = Store()
    reimported = [again.get_trace(i) for i in import_traces(again, path)]
    lossless = [a.to_dict() for a in reimported] == [t.to_dict() for t in traces]
    print(f"   turns byte-exact: {exact}/{turns} (anchor: the notebooks' printed model outputs)")
    print(f"   tips/information blocks kept as the runner wrote them: {blocks_kept}/{blocks}")
    print(f"   code blocks kept: {code_blocks}/{code}; code turns with an output image: {code_images}/{code} "
          f"(regenerated by the sandbox: {result.images_regenerated})")
    print(f"   export + re-import into a fresh home: {'identical' if lossless else 'DIFFERENT'}")
    good = (len(traces) == 8 and exact == turns and blocks_kept == blocks and code_images == code == code_blocks
            and lossless)
    print(f"   => {'ok' if good else 'FAIL'}")
    return good


# ------------------------------------------------------------------------------------------ 3. rewards


def released_rewards(repo: Repo) -> dict[str, dict]:
    """The released format and accuracy functions per kind, with the local similarity model."""
    from math_verify import parse, verify
    from sentence_transformers import util

    from workbench.rewards.text import load_similarity_model

    found = {}
    for kind, script in REWARD_SCRIPTS.items():
        namespace = {"re": re, "os": os, "string": string, "datetime": datetime, "parse": parse, "verify": verify,
                     "util": util, "sentence_tranformers_model": load_similarity_model()}
        names = {"normalize", "compute_f1", "accuracy_reward", "format_reward"}
        names |= {"extract_problems"} if kind == "code" else {"compute_similarity"}
        found[kind] = functions_of(repo.text(script), names, namespace)
    return found


def probe_cases(episodes: list[dict]) -> list[tuple[str, str, str | None, str]]:
    """(kind, solution, type, completion): PROTOCOL.md's table, variants of it, and the demo turns crossed."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from test_reward_presets import EDGE_CASES, PAPER_CASES

    cases = [(kind, solution, step, completion) for _, kind, step, solution, completion, _, _ in
             PAPER_CASES + EDGE_CASES]
    variants = [lambda c: c, lambda c: c + "\n", lambda c: "\n" + c, lambda c: c.replace("\n", ""),
                lambda c: c.replace("<think>", "<think>\n"), lambda c: c.upper(), lambda c: c + c,
                lambda c: c.replace("'", '"'), lambda c: c.replace("</answer>", ""), lambda c: c[: len(c) // 2]]
    for kind, solution, step, completion in list(cases):
        cases += [(kind, solution, step, change(completion)) for change in variants[1:]]
    turns = [(e["record"].get("type") is not None, r) for e in episodes for r in e["results"]]
    for coding, solution in turns:
        step = None
        if coding:
            step = "pre_problem" if "<problem>" in solution else "pre_code" if "<code>" in solution else "pre_answer"
        kind = "code" if coding else "search"
        cases += [(kind, solution, step, completion) for other, completion in turns if other == coding]
    return cases


def bench_rewards(repo: Repo, workdir: Path) -> bool:
    from workbench.rewards import paper

    released = released_rewards(repo)
    cases = probe_cases(coding_episodes(repo, workdir) + search_episodes(repo, workdir))
    print(f"\n3. Paper preset vs the released reward functions: {len(cases)} cases (target: every value equal)")
    misses = 0
    for kind, solution, step, completion in cases:
        columns = {"solution": [solution], "type": [step], "kind": [kind]}
        ours = (paper.format_reward([completion], **columns)[0], paper.accuracy_reward([completion], **columns)[0])
        theirs_format = released[kind]["format_reward"]([[{"content": completion}]], solution=[solution])[0]
        theirs = (theirs_format, released[kind]["accuracy_reward"]([[{"content": completion}]], solution=[solution])[0])
        if abs(ours[0] - theirs[0]) > 1e-9 or abs(ours[1] - theirs[1]) > 1e-6:
            misses += 1
            if misses <= 10:
                print(f"   MISS {kind} {solution[:40]!r} vs {completion[:60]!r}: ours {ours}, released {theirs}")
    print(f"   format and accuracy equal on {len(cases) - misses}/{len(cases)} cases (PROTOCOL.md's table and edge "
          "cases, 9 variants of each, the 23 demo turns scored against each other)")
    print(f"   => {'ok' if not misses else 'FAIL'}")
    return misses == 0


def main(argv: list[str]) -> int:
    flags = {arg for arg in argv[1:] if arg.startswith("--")}  # --quick (same size: it takes seconds), --json
    positional = [arg for arg in argv[1:] if not arg.startswith("--")]
    repo = Repo(positional[0] if positional else os.environ.get("VISUAL_RFT_REPO", DEFAULT_REPO))
    if not repo.exists():
        print(f"skipped: the Visual-ARFT repository is not at {repo.path} (give its path as the argument or "
              "VISUAL_RFT_REPO)")
        figures = [Figure("paper_artifacts", math.nan, "", "reported", True,
                          note=f"skipped: no repository at {repo.path}")]
        return finish(figures, True) if "--json" in flags else 0
    print(f"Visual-ARFT repository: {repo.path}")
    with tempfile.TemporaryDirectory(prefix="paper-artifacts-") as folder:
        for part in ("results", "demo", "rewards"):
            (Path(folder) / part).mkdir()
        results = [bench_result_files(repo, Path(folder) / "results"), bench_demo_episodes(repo, Path(folder) / "demo"),
                   bench_rewards(repo, Path(folder) / "rewards")]
    print("\nall targets met" if all(results) else "\nTARGET MISSED")
    if "--json" in flags:
        names = ("paper_result_files_agree", "paper_demo_episodes_lossless", "paper_rewards_equal")
        return finish([Figure(name, float(ok), "", "ours = 1 (everything agrees with the paper's code)", ok)
                       for name, ok in zip(names, results)], True)
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
