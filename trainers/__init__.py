"""Training jobs (GRPO, SFT) built on TRL; run as background processes."""
