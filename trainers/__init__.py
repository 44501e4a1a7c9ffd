"""Training jobs (GRPO, SFT) built on TRL; run as background processes.

Importing the package (which `python -m trainers.grpo|sft` does before torch
loads) shortens how long OpenMP worker threads spin-wait (GOMP_SPINCOUNT),
unless the user set it or OMP_WAIT_POLICY. Measured on the 2-core machines:
with the default spin, other busy processes make a torch step 5-30x slower;
with 1000 spins it stays within a few percent of the quiet-machine speed.
"""

import os

if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "1000"
