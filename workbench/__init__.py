"""Visual-ARFT workbench: the core, the services over it, and the web UI. Imports only point down.

- core modules: `settings` (where things live), `trace` (the one trace shape), `trace_io`,
  `protocol` (tags and layouts), `images` (safe intake, content-addressed files), `records`
  (reading data files), `fields` (config fields with help text), `versions` (private-API guards),
  `store` (the only module that talks SQL), `ingest` (batches from training scripts elsewhere), `chat_traces`
  and `rollout_import` (other frameworks' rollouts as traces);
- `backends/`: models (local transformers with KV reuse, OpenAI-compatible endpoints, the tiny model);
- `rewards/`: the Visual-ARFT reward functions and their weighting;
- `benchmarks/`: MAT-style benchmark files, the paper's scoring, evaluation runs, offline mini benchmarks;
- `agent/`: multi-turn rollouts with tools, and the service that runs a question in a run of its own;
- `jobs/`: background jobs as database rows (supervisor, reconcile, a viewer's watch);
- `run_charts`, `search_service`: plain-Python data for the Runs and Search cache tabs;
- `cli`: `python -m workbench`;
- `integrations/`: for training code the workbench did not launch (`WorkbenchCallback` for TRL, where it writes);
- `ui/`: the Gradio app (thin callbacks over the above);
- `synth/`: scripts that remake the shipped demo assets (nothing at run time imports them).
`tests/test_architecture.py` holds the layer table and enforces it.
"""

__version__ = "0.1.0"
