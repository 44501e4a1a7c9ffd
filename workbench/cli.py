"""Command line: `python -m workbench <command>`; each command is a thin call into a service.

Each command imports only what it needs (scoring a file never loads torch or
the store). A user error -- a bad config, image, path or value -- is one
line on stderr and exit code 2; `--debug` shows the traceback instead.
"""

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from workbench.agent.config import RunnerConfig
from workbench.fields import field_help


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="demo",
                        help="'demo' (the shipped demo model), 'tiny' (untrained), a local folder or hub id, or "
                             "openai:<model>@<base_url>")
    parser.add_argument("--adapter", default=None, help="a LoRA adapter folder to load on top of the model")


def _add_runner_args(parser: argparse.ArgumentParser) -> None:
    help_text = field_help(RunnerConfig)
    parser.add_argument("--tools", default="code", help=help_text["tools"] + " Comma-separated; '' for none.")
    parser.add_argument("--protocol", default="tags", help=help_text["protocol"])
    parser.add_argument("--layout", default="chat",
                        help=help_text["layout"] + " Default chat: the demo model's layout.")
    parser.add_argument("--max-turns", type=int, default=5, help=help_text["max_turns"])
    parser.add_argument("--samples", type=int, default=1, help=help_text["samples"])
    parser.add_argument("--temperature", type=float, default=0.0, help=help_text["temperature"])
    parser.add_argument("--max-new-tokens", type=int, default=256, help=help_text["max_new_tokens"])
    parser.add_argument("--seed", type=int, default=0, help=help_text["seed"])
    parser.add_argument("--search-backend", default="local", help="local (a corpus you point at) or serpapi")
    parser.add_argument("--corpus", default=None, help="JSONL file or folder of documents for local search")
    parser.add_argument("--search-mode", default="cache-first", help="live, cache-first or offline")


def _runner_config(args: argparse.Namespace) -> RunnerConfig:
    tools = tuple(t.strip() for t in args.tools.split(",") if t.strip())
    return RunnerConfig(tools=tools, protocol=args.protocol, layout=args.layout, max_turns=args.max_turns,
                        samples=args.samples, temperature=args.temperature,
                        max_new_tokens=args.max_new_tokens, seed=args.seed)


def cmd_run(args: argparse.Namespace) -> int:
    from workbench.agent.service import run_question
    from workbench.store import Store

    config = _runner_config(args)
    if "code" in config.tools:
        from workbench.agent.tools import code_tool_status

        status = code_tool_status()
        if status.startswith("Code execution is off"):
            print(f"warning: {status} The question still runs; code turns fail.", file=sys.stderr)
    traces = run_question(Store(), args.question, args.image, model=args.model, adapter=args.adapter, config=config,
                          source="cli", search_backend=args.search_backend, corpus=args.corpus,
                          search_mode=args.search_mode)
    if args.json:
        print(json.dumps([t.to_dict() for t in traces] if len(traces) > 1 else traces[0].to_dict(),
                         ensure_ascii=False))
        return 0
    for trace in traces:
        print(f"trace {trace.id} (run {trace.run_id}) stop={trace.stop_reason} answer={trace.final_answer!r}")
        for turn in trace.turns:
            print(f"  turn {turn.index}: {turn.action or 'parse error'}: "
                  f"{(turn.argument or turn.parse_error or '')[:200]!r}")
            if turn.tool_call:
                status = "ok" if turn.tool_call.ok else f"failed: {turn.tool_call.error}"
                print(f"    tool {turn.tool_call.name} {status} ({turn.tool_call.latency_s:.2f}s)")
    return 0


def cmd_build_tiny(args: argparse.Namespace) -> int:
    from workbench.backends.tiny import ensure_tiny_model

    print(ensure_tiny_model(args.arch))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from workbench.store import Store
    from workbench.trace_io import export_run

    store = Store()
    if store.get_run(args.run) is None:
        raise ValueError(f"no run {args.run!r}; run ids are in the app's Runs tab")
    print(f"wrote {export_run(store, args.run, args.out)} traces to {args.out}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from workbench.store import Store

    store = Store()
    if args.format == "jsonl":
        from workbench.trace_io import import_jsonl

        print(f"imported {len(import_jsonl(store, args.file, args.name))} traces")
        return 0
    if args.format in ("verl", "openai-chat", "trl"):
        from workbench.rollout_import import import_rollouts

        print(import_rollouts(store, args.file, args.format, args.name, args.images).summary())
        return 0
    from workbench.chains import import_chains

    if not Path(args.file).is_file():
        raise FileNotFoundError(2, "No such file", str(args.file))
    print(import_chains(store, args.file, args.name, args.images, rerun_code=args.rerun_code).summary())
    return 0


def cmd_deliver(args: argparse.Namespace) -> int:
    from workbench.integrations.sinks import HttpSink

    if not Path(args.spool).is_dir():
        raise FileNotFoundError(2, "No such folder", str(args.spool))
    sink = HttpSink(args.url, args.token or os.environ.get("WORKBENCH_INGEST_TOKEN", ""), args.spool)
    waiting = sink.pending()
    done = sink.close(args.timeout)
    print(f"delivered {sink.delivered} of {waiting} batches, refused {sink.rejected}, left {sink.pending()}")
    return 0 if done else 1


def cmd_eval(args: argparse.Namespace) -> int:
    from workbench.benchmarks.evaluation import DEFAULT_TOOLS, EvalConfig, run_evaluation
    from workbench.store import Store

    config = EvalConfig(benchmark=args.benchmark, data=args.data, images=args.images, model=args.model,
                        adapter=args.adapter, limit=args.limit, corpus=args.corpus,
                        search_backend=args.search_backend, search_mode=args.search_mode, name=args.name)
    if args.tools is None:
        args.tools = ",".join(DEFAULT_TOOLS[args.benchmark])
    runner_config = _runner_config(args)

    def progress(done: int, total: int) -> None:
        print(f"{done}/{total} items", file=sys.stderr, flush=True)

    store = Store()
    run_id = run_evaluation(store, config, runner_config, run_id=args.run_id, on_progress=progress)
    summary = store.get_run(run_id)["summary"]
    print(json.dumps({"run_id": run_id, **summary}) if args.json else f"run {run_id}: {summary}")
    return 0


def cmd_repair_db(args: argparse.Namespace) -> int:
    from workbench import settings
    from workbench.database_file import repair

    path = settings.db_path()
    if not path.is_file():
        raise ValueError(f"there is no database at {path}; set WORKBENCH_HOME to the folder that holds it")
    kept = repair(path)
    print(f"repaired {path}: kept " + ", ".join(f"{count} {table}" for table, count in kept.items()) +
          "; the damaged file is beside it (.damaged-<time>)")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from workbench.benchmarks.scoring import load_predictions, score_predictions

    if args.import_name:
        from workbench.benchmarks.evaluation import import_predictions  # the store: only when the scores are kept
        from workbench.store import Store

        run_id, report = import_predictions(Store(), args.predictions, args.benchmark, args.import_name)
        print(f"stored as run {run_id}", file=sys.stderr)
    else:
        report = score_predictions(load_predictions(args.predictions), args.benchmark)
    summary = report.to_json()
    for note in report.notes + report.warnings:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key:10} {value}")
        for name, group in sorted(report.per_type.items()):
            print(f"{'type ' + name:24} n={group.n:<4} f1={group.f1:6.2f} em={group.em:6.2f}")
    return 0


def cmd_space(args: argparse.Namespace) -> int:
    from workbench import space

    if args.space_command == "build":
        out = space.build_space(args.out, space.SpaceOptions(public_demo=args.public_demo))
        problems = space.check_space(out)
        print(f"built {out}" + ("" if not problems else f"; but: {problems[0]}"))
        return 2 if problems else 0
    if args.space_command == "check":
        problems = space.check_space(args.out)
        for problem in problems:
            print(f"problem: {problem}", file=sys.stderr)
        print(f"{args.out}: ready to deploy" if not problems else f"{args.out}: {len(problems)} problem(s)")
        return 2 if problems else 0
    print(space.deploy_space(args.out, args.repo, private=args.private))
def cmd_reward(args: argparse.Namespace) -> int:
    from workbench.rewards.rows import read_rows, score_rows

    rows = read_rows(args.input)
    scored = score_rows(rows, args.preset)
    for position, result in enumerate(scored):
        if args.json:
            print(json.dumps(result, ensure_ascii=False))
        else:
            print(f"row {position:<4} {rows[position]['kind']:6} format {result['format']:.3f}  "
                  f"accuracy {result['accuracy']:.3f}  total {result['total']:.3f}")
    if not args.json:
        mean = sum(result["total"] for result in scored) / len(scored)
        print(f"{len(scored)} rows, preset {args.preset}: mean total {mean:.4f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m workbench", description="Visual-ARFT workbench")
    parser.add_argument("--debug", action="store_true",
                        help="show tracebacks and debug logs instead of one-line errors")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the agent on one image and question; stores the trace")
    run.add_argument("--image", action="append", required=True, help="input image (repeat for several)")
    run.add_argument("--question", required=True)
    _add_model_args(run)
    _add_runner_args(run)
    run.add_argument("--json", action="store_true", help="print the trace as JSON")
    run.set_defaults(func=cmd_run)

    build = sub.add_parser("build-tiny-model", help="build the embedded tiny Qwen-VL model (once)")
    build.add_argument("--arch", default="qwen2_5_vl", choices=["qwen2_5_vl", "qwen3_vl"])
    build.set_defaults(func=cmd_build_tiny)

    export = sub.add_parser("export", help="export a run's traces as JSONL with an image folder")
    export.add_argument("--run", required=True)
    export.add_argument("--out", required=True)
    export.set_defaults(func=cmd_export)

    imp = sub.add_parser("import", help="import traces (JSONL export, raw Visual-ARFT chains, or other frameworks' "
                                        "rollouts: verl, OpenAI-style chat, TRL completion tables)")
    imp.add_argument("file")
    imp.add_argument("--format", choices=["jsonl", "chains", "verl", "openai-chat", "trl"], default="jsonl",
                     help="chains: raw Visual-ARFT chains as the paper's runner writes them, a JSON list of "
                          "{chain|response, images|image?, question?, answer|answers|gt?, id?, ...}; verl: a "
                          "rollout_data_dir folder or one <step>.jsonl; openai-chat: JSONL of {messages: [...]}; "
                          "trl: GRPO's completions_*.parquet (a file or its folder) or a W&B/trackio table JSON")
    imp.add_argument("--images", default=None, help="folder that image paths in the file are relative to")
    imp.add_argument("--rerun-code", action="store_true",
                     help="chains: run each code turn that has no output image in the sandbox to regenerate it")
    imp.add_argument("--name", default="imported", help="name of the imported run")
    imp.set_defaults(func=cmd_import)

    deliver = sub.add_parser("deliver", help="send the batches a training callback left in its spool folder to a "
                                             "running workbench")
    deliver.add_argument("spool", help="the spool folder (WorkbenchCallback(spool_dir=...))")
    deliver.add_argument("--url", required=True, help="the workbench's address, e.g. http://127.0.0.1:7860")
    deliver.add_argument("--token", default=None, help="its ingestion token (default: WORKBENCH_INGEST_TOKEN)")
    deliver.add_argument("--timeout", type=float, default=60.0, help="seconds to keep trying")
    deliver.set_defaults(func=cmd_deliver)

    benchmarks = ["mat-coding", "mat-search", "multihop"]
    evaluate = sub.add_parser("eval", help="run the agent over a benchmark and store a scored run (resumable)")
    evaluate.add_argument("--benchmark", required=True, choices=benchmarks)
    evaluate.add_argument("--data", required=True, help="benchmark JSON/JSONL file")
    evaluate.add_argument("--images", default=None, help="folder the image paths are relative to")
    evaluate.add_argument("--limit", type=int, default=None, help="only the first N items")
    evaluate.add_argument("--run-id", default=None, help="resume this run (only missing items are redone)")
    evaluate.add_argument("--name", default="", help="run name")
    evaluate.add_argument("--json", action="store_true")
    _add_model_args(evaluate)
    _add_runner_args(evaluate)
    evaluate.set_defaults(func=cmd_eval, tools=None)

    repair = sub.add_parser("repair-db", help="copy every readable row of a damaged database into a new file "
                                              "that replaces it (stop the app first)")
    repair.set_defaults(func=cmd_repair_db)

    score = sub.add_parser("score", help="score a result file of {[id,] gt, pred_answer} items (id optional)")
    score.add_argument("--benchmark", required=True, choices=benchmarks)
    score.add_argument("--predictions", required=True)
    score.add_argument("--json", action="store_true",
                       help="one JSON object: n, all_f1, all_em (+ simple/hard for MAT), percentages")
    score.add_argument("--import", dest="import_name", default=None, metavar="NAME",
                       help="also store it as a run named NAME for the UI to compare")
    score.set_defaults(func=cmd_score)

    space = sub.add_parser("space", help="build, check and deploy a Hugging Face Space of the workbench")
    space_sub = space.add_subparsers(dest="space_command", required=True)
    build = space_sub.add_parser("build", help="write a ready Space folder (code, demo model and assets, front matter)")
    build.add_argument("out", help="the folder to write (replaced)")
    build.add_argument("--public-demo", action="store_true", help="start the Space in public-demo mode")
    check = space_sub.add_parser("check", help="validate a Space folder offline; lists every problem")
    check.add_argument("out")
    deploy = space_sub.add_parser("deploy", help="upload a Space folder with huggingface_hub (token: $HF_TOKEN)")
    deploy.add_argument("out")
    deploy.add_argument("--repo", required=True, help="the Space as USER/NAME")
    deploy.add_argument("--private", action="store_true")
    space.set_defaults(func=cmd_space)
    reward = sub.add_parser("reward", help="score completions with a reward preset (e.g. to check a reward change)")
    reward.add_argument("--preset", choices=["workbench", "paper"], default="workbench",
                        help="workbench (the default rewards) or paper (the released reward code's values)")
    reward.add_argument("--input", required=True,
                        help='JSONL rows {"kind": "code"|"search", "solution", "completion"[, "type", "gt"]}')
    reward.add_argument("--json", action="store_true",
                        help="one JSON object per row: format, accuracy, total and each component")
    reward.set_defaults(func=cmd_reward)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s: %(message)s")
    if not args.debug:  # model loading's progress bars would bury the one line that matters
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    return run_reporting_errors(args.func, args, debug=args.debug)


def run_reporting_errors(command, args, *, debug: bool = False) -> int:
    """Run a command; a user error (bad value, missing file) is one line on stderr and exit code 2.

    A full disk is one line too, with exit code EXIT_DISK_FULL.
    """
    if debug:
        return command(args)
    from workbench.database_file import disk_full_message, is_disk_full
    from workbench.processes import EXIT_DISK_FULL

    try:
        return command(args)
    except Exception as exc:
        if is_disk_full(exc):  # a job's supervisor reports this exit code as "disk full"
            print(f"error: {disk_full_message()}", file=sys.stderr)
            return EXIT_DISK_FULL
        if not isinstance(exc, (ValueError, OSError)):
            raise
        print(f"error: {user_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def user_message(exc: BaseException) -> str:
    """The exception's own words; an OSError as 'what: path' rather than its errno repr.

    >>> user_message(FileNotFoundError(2, "No such file or directory", "x.json"))
    'x.json: no such file or directory'
    >>> user_message(ValueError("max_turns=0; use 1..20"))
    'max_turns=0; use 1..20'
    """
    if isinstance(exc, OSError) and exc.strerror:
        where = exc.filename if exc.filename is not None else ""
        return f"{where}: {exc.strerror.lower()}" if where else exc.strerror.lower()
    return str(exc) or type(exc).__name__
