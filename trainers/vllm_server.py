"""A training job with its own vLLM server: `python -m trainers.vllm_server HEALTH_URL -- SERVER... -- TRAINER...`.

TRL's server mode (`vllm_mode=server`) generates rollouts in a separate
`trl vllm-serve` process on GPUs of its own (needed from 7B up and for
multi-node runs). The launcher (trainers.launch) builds both argvs; this
module owns their lifecycle inside one job: start the server, wait until its
health endpoint answers (or the server dies, or `--wait` seconds pass), run
the trainer, and stop the server when the trainer ends, fails or the job is
cancelled (SIGTERM is passed on to both). The exit code is the trainer's
(or 1 when the server never came up).
"""

import argparse
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

STOP_GRACE_S = 30.0  # a vLLM server frees its GPUs on SIGTERM within seconds; then it is killed


def split_commands(argv: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(own options, server argv, trainer argv) from `OPTIONS -- SERVER -- TRAINER`.

    >>> split_commands(["http://h/health", "--", "vllm", "serve", "--", "python", "-m", "trainers.grpo"])
    (['http://h/health'], ['vllm', 'serve'], ['python', '-m', 'trainers.grpo'])
    """
    if argv.count("--") < 2:
        raise SystemExit("usage: python -m trainers.vllm_server HEALTH_URL [--wait S] -- SERVER ARGV -- TRAINER ARGV")
    first = argv.index("--")
    second = argv.index("--", first + 1)
    return argv[:first], argv[first + 1:second], argv[second + 1:]


def wait_until_healthy(url: str, server: subprocess.Popen, timeout_s: float, poll_s: float = 1.0) -> str | None:
    """None once `url` answers 200; else why not (the server exited, or the time ran out)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            return f"the vLLM server exited with code {server.returncode} before it was ready"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return None
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(poll_s)
    return f"the vLLM server did not answer {url} within {timeout_s:.0f} s"


def stop(process: subprocess.Popen | None, grace_s: float = STOP_GRACE_S) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main(argv: list[str] | None = None) -> int:
    own, server_argv, trainer_argv = split_commands(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m trainers.vllm_server")
    parser.add_argument("health_url")
    parser.add_argument("--wait", type=float, default=900.0, help="seconds to wait for the server (loading a model "
                                                                  "and compiling take minutes)")
    args = parser.parse_args(own)
    server = subprocess.Popen(server_argv, stdin=subprocess.DEVNULL)
    trainer: subprocess.Popen | None = None

    def on_term(*_):
        stop(trainer)
        stop(server)
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, on_term)
    try:
        print(f"[workbench] waiting for the vLLM server at {args.health_url}", flush=True)
        problem = wait_until_healthy(args.health_url, server, args.wait)
        if problem:
            print(f"error: {problem}", file=sys.stderr, flush=True)
            return 1
        trainer = subprocess.Popen(trainer_argv, stdin=subprocess.DEVNULL)
        return trainer.wait()
    finally:
        stop(trainer)
        stop(server)


if __name__ == "__main__":
    sys.exit(main())
