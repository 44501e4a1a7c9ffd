"""The app's ingestion route, POST /workbench/ingest: a thin door onto workbench.ingest.

Added to Gradio's FastAPI app only when the deployment policy carries a token
(WORKBENCH_INGEST_TOKEN set, not a public demo): without one the route does
not exist at all. A request needs `Authorization: Bearer <token>`; the body
is read up to the size limit and no further (413 past it); checking the batch
(images decoded by Pillow) and storing it run in a worker thread. Answers are
JSON: the stored counts, `duplicate: true` for a batch already stored, or
{"error": "..."} with 401, 400, 413 or 415.
"""

import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from workbench.ingest import INGEST_PATH, LIMITS, IngestError, Limits, parse_batch, store_batch, token_ok
from workbench.store import Store

log = logging.getLogger(__name__)


def ingest_routes(store: Store, token: str, limits: Limits = LIMITS) -> list[Route]:
    """The route, for FastAPI(routes=...) (Gradio's `launch(app_kwargs=...)`): there before the first request."""

    async def ingest(request: Request) -> JSONResponse:
        if not token_ok(token, request.headers.get("authorization")):
            return JSONResponse({"error": "missing or wrong ingestion token: send 'Authorization: Bearer <token>' "
                                          "with the token the operator set in WORKBENCH_INGEST_TOKEN"}, 401)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limits.max_body_bytes:
            return _too_big(int(declared), limits)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limits.max_body_bytes:
                return _too_big(len(body), limits)
        try:
            batch = await run_in_threadpool(parse_batch, bytes(body), limits)
            result = await run_in_threadpool(store_batch, store, batch)
        except IngestError as exc:
            return JSONResponse({"error": str(exc)}, exc.status)
        log.info("ingested batch %s of run %s: %s metric rows, %s traces%s", result["batch_id"], result["run_id"],
                 result["metrics"], result["traces"], " (duplicate, not stored again)" if result["duplicate"] else "")
        return JSONResponse(result)

    return [Route(INGEST_PATH, ingest, methods=["POST"])]


def _too_big(size: int, limits: Limits) -> JSONResponse:
    return JSONResponse({"error": f"the batch is over the {limits.max_body_bytes / 1e6:.0f} MB limit ({size} bytes "
                                  "or more); send fewer traces per batch or raise WORKBENCH_INGEST_MAX_MB"}, 413)
