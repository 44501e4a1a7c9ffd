"""Using the workbench from training code it did not launch: the drop-in TRL callback and where it writes.

- `trl_callback`: `WorkbenchCallback`, for anyone's own TRL GRPO script;
- `sinks`: a local workbench home, or a running workbench over HTTP (spooled to disk, delivered later).
"""
