"""The agent: multi-turn rollouts of a model with tools, and the service that runs questions for the CLI and UI.

- `config`: `RunnerConfig`, the rollout settings (light to import: no torch);
- `runner`: `AgentRunner`, batched multi-turn rollouts of N questions x G samples;
- `tools`: the tools as the agent and training call them (`call_tool`, one result shape);
- `service`: loads models once and owns a question's run from creation to its final state.
"""
