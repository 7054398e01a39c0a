"""The experiments of Cranmer et al. as library code, the ones `lagrax reproduce`
runs: one module per experiment, each with a frozen `Settings` dataclass (the
command line's options) and small functions, `data`, `models`, `train`,
`evaluate`, `table`, `figures`, over it, and a `run` that chains them.

!!! example

    ```python
    import jax
    import lagrax.experiments
    from lagrax.experiments import double_pendulum

    jax.config.update("jax_enable_x64", True)  # the evaluation is in float64
    settings = double_pendulum.Settings(steps=2_000, rollout_steps=0)
    report = double_pendulum.run(settings, out="results/double-pendulum")
    print(report.table)
    report.save("results/double-pendulum")  # results.json and PNG plots
    ```

The experiments use only lagrax's public API.
"""

from . import (
    ablation as ablation,
    chain_pendulum as chain_pendulum,
    double_pendulum as double_pendulum,
    noisy_pendulum as noisy_pendulum,
    real_double_pendulum as real_double_pendulum,
    relativity as relativity,
    springs as springs,
    wave as wave,
)
from ._common import Report as Report
