"""What every tab is built with: the store, the deployment policy, the viewer of a request, model warm-up.

`UIContext` is passed to each tab module's `build(ctx)`; callbacks get a
`Viewer` from `ctx.viewer(request)` so run visibility is decided in one place.
"""

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from workbench.store import Store
from workbench.ui.deployment import DeploymentPolicy, Viewer, is_visitor_token

log = logging.getLogger(__name__)


@dataclass
class ModelWarmup:
    """Loads the demo model in the background, so the UI starts at once; logs which isolation runs model code."""

    status: str = "not started"
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="demo-model-warmup", daemon=True)
        thread.start()
        return thread

    def _run(self) -> None:
        self.status = "starting"
        from workbench.agent.tools import code_tool_status

        status = code_tool_status()  # which isolation runs model code here (the shared sandbox starts now)
        (log.warning if status.startswith("Code execution is off") else log.info)("code tool: %s", status)
        try:
            from workbench.agent.service import get_backend

            self.status = "loading the demo model"
            get_backend("demo")
            self.status = "ready"
            log.info("demo model ready")
        except Exception as exc:  # the playground reports it; the rest of the app still works
            self.error = f"{type(exc).__name__}: {exc}"
            self.status = "failed"
            log.exception("demo model warm-up failed")
        finally:
            self.done.set()


@dataclass
class UIContext:
    """Shared services of one app instance."""

    store: Store
    policy: DeploymentPolicy
    warmup: ModelWarmup = field(default_factory=ModelWarmup)
    visitor: Any = None  # gr.BrowserState holding the visitor token (public demo), set by the app

    def viewer(self, request: gr.Request | None, token: str | None = None) -> Viewer:
        """The viewer behind a request: in a public demo, the browser's visitor token (never the session hash,
        which a client can copy from another visitor's page) is its identity."""
        if not self.policy.public_demo:
            return Viewer()
        return Viewer(public_demo=True, visitor=token if is_visitor_token(token) else None)

    def visitor_inputs(self) -> list:
        """The visitor-token input a viewer-dependent event needs: the browser-kept token in a public demo."""
        return [self.visitor] if self.policy.public_demo and self.visitor is not None else []
