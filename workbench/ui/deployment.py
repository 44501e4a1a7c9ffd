"""Deployment policy: the public-demo restrictions and who may see which runs.

Protects a public deployment (WORKBENCH_PUBLIC_DEMO=1, e.g. a Space) against:
visitors loading arbitrary model paths or adapters (only the shipped demo
model runs), oversized generation settings that would hog the CPU, one
visitor seeing another's uploads and playground runs, and unbounded
concurrency (queue limits). A visitor is a random token kept in their
browser (encrypted localStorage, so reloading keeps their runs); a Gradio
session hash, which a client can copy, is never an identity. It does not
protect against a visitor whose token is stolen from their browser, against
denial of service beyond the queue limits, or against anything the optional
shared password cannot stop. Run ingestion from training scripts elsewhere
(`ingest_token`, from WORKBENCH_INGEST_TOKEN) is off unless the operator sets
a token, and never on in a public demo; the code tool's sandbox is what protects the
machine from model-written code.

Plain Python (no Gradio): the app and its tests read the same policy.
"""

import os
import re
import secrets
from dataclasses import dataclass

from workbench import settings
from workbench.agent.config import RunnerConfig
from workbench.ingest import configured_token

PUBLIC_MODELS = ("demo",)
VISITOR_TOKEN = re.compile(r"[A-Za-z0-9_-]{32,128}")
TRUE_WORDS = {"1", "true", "yes", "on"}


class PolicyError(ValueError):
    """A request the deployment does not allow; the message says what is allowed."""


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in TRUE_WORDS


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """WORKBENCH_AUTH="user:pass" -> ("user", "pass"); None when unset.

    >>> parse_auth("ann:s3cret:x")
    ('ann', 's3cret:x')
    >>> parse_auth("") is None
    True
    """
    if not value or not value.strip():
        return None
    user, sep, password = value.strip().partition(":")
    if not sep or not user or not password:
        raise PolicyError("WORKBENCH_AUTH must look like user:password")
    return user, password


@dataclass(frozen=True)
class DeploymentPolicy:
    """What this deployment allows; `public_demo` turns every restriction on."""

    public_demo: bool = False
    auth: tuple[str, str] | None = None
    max_upload_mb: int = 50
    concurrency_limit: int = 4  # default concurrent events of one kind
    model_concurrency: int = 1  # playground runs at once (one CPU model)
    queue_size: int | None = None
    max_new_tokens: int = 4096
    max_samples: int = 16
    max_turns: int = 20
    ingest_token: str | None = None  # training scripts elsewhere may send runs (workbench.ingest); None: no route

    @classmethod
    def from_env(cls, public_demo: bool | None = None) -> "DeploymentPolicy":
        public = env_flag("WORKBENCH_PUBLIC_DEMO") if public_demo is None else public_demo
        auth = parse_auth(os.environ.get("WORKBENCH_AUTH"))
        if public:  # never ingestion on a public demo, whatever WORKBENCH_INGEST_TOKEN says
            return cls(public_demo=True, auth=auth, max_upload_mb=8, concurrency_limit=2, model_concurrency=1,
                       queue_size=32, max_new_tokens=256, max_samples=4, max_turns=5)
        try:
            token = configured_token()
        except ValueError as exc:
            raise PolicyError(str(exc)) from None
        return cls(auth=auth, ingest_token=token)

    @property
    def show_training(self) -> bool:
        return not self.public_demo

    def check_model(self, model: str, adapter: str | None) -> None:
        if not self.public_demo:
            return
        if (model or "").strip() not in PUBLIC_MODELS:
            raise PolicyError(f"this public demo runs only the embedded model ({', '.join(PUBLIC_MODELS)}); "
                              "run the workbench yourself to load other models")
        if adapter and adapter.strip():
            raise PolicyError("this public demo does not load adapters; run the workbench yourself to use one")

    def check_runner_config(self, config: RunnerConfig) -> None:
        limits = (("max_new_tokens", self.max_new_tokens), ("samples", self.max_samples),
                  ("max_turns", self.max_turns))
        for name, limit in limits:
            if getattr(config, name) > limit:
                raise PolicyError(f"{name}={getattr(config, name)} is over this deployment's limit of {limit}")
        if self.public_demo and config.system_prompt:
            raise PolicyError("this public demo uses the built-in system prompt")


def new_visitor_token() -> str:
    """An unguessable visitor identity (256 bits), kept in the visitor's browser."""
    return secrets.token_urlsafe(32)


# The browser makes its own token on its first visit, before any event can need it (a server round trip at page
# load lost the race with a quick first click): 32 random bytes, base64url, as `new_visitor_token`.
VISITOR_TOKEN_JS = """(current) => {
  if (typeof current === 'string' && /^[A-Za-z0-9_-]{32,128}$/.test(current)) return current;
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return btoa(String.fromCharCode(...bytes)).replace(/[+]/g, '-').replace(/[/]/g, '_').replace(/=+$/, '');
}"""


def is_visitor_token(value: object) -> bool:
    """Whether a value can be a visitor token (random URL-safe text of 32 to 128 characters).

    >>> is_visitor_token(new_visitor_token()), is_visitor_token("alice"), is_visitor_token(None)
    (True, False, False)
    """
    return isinstance(value, str) and VISITOR_TOKEN.fullmatch(value) is not None


def browser_secret() -> str:
    """The key that encrypts visitor tokens in browsers: made once per workbench home, so tokens survive restarts."""
    path = settings.home() / "browser_state.secret"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


@dataclass(frozen=True)
class Viewer:
    """Who is looking: in a public demo each browser (its visitor token) is its own visitor."""

    public_demo: bool = False
    visitor: str | None = None

    def can_see_run(self, run: dict | None) -> bool:
        """Everything is visible locally; in a public demo, only shipped demo runs and the visitor's own."""
        if run is None:
            return False
        if not self.public_demo:
            return True
        config = run.get("config") or {}
        if config.get("demo") is True:
            return True
        return self.visitor is not None and config.get("visitor") == self.visitor

    def run_tags(self) -> dict[str, str]:
        """Config entries that mark a new playground run as this visitor's."""
        return {"visitor": self.visitor} if self.public_demo and self.visitor else {}

    def visible_runs(self, store, kind: str | None = None, limit: int = 500) -> list[dict]:
        return [run for run in store.list_runs(kind=kind, limit=limit) if self.can_see_run(run)]
