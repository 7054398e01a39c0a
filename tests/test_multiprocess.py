import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

import lagrax

from ._multiprocess_worker import arrays, settings


# A hang (a process waiting on a collective its peer never joins) fails the test,
# well after the ~15 s of CPU time the two processes take.
_TIMEOUT = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch(folder: pathlib.Path) -> list[subprocess.Popen]:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    # One CPU device a process, whatever the caller's flags.
    flags = env.get("XLA_FLAGS", "").split()
    env["XLA_FLAGS"] = " ".join(
        f for f in flags if "xla_force_host_platform_device_count" not in f
    )
    worker = pathlib.Path(__file__).with_name("_multiprocess_worker.py")
    port = str(_free_port())
    return [
        subprocess.Popen(
            [sys.executable, str(worker), str(i), port, str(folder)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]


def _wait(processes: list[subprocess.Popen]) -> list[str]:
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=_TIMEOUT)[0])
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
        pytest.fail(f"the two training processes did not finish in {_TIMEOUT} s")
    finally:
        for process in processes:
            process.kill()
            process.wait()
    for i, (process, output) in enumerate(zip(processes, outputs)):
        assert process.returncode == 0, f"process {i}:\n{output[-3000:]}"
    return outputs


@pytest.mark.slow
def test_fit_across_two_processes(tmp_path):
    """Two processes (one CPU device each, gloo collectives) train one model with
    `fit(devices=jax.devices())`: both end with the same parameters, those of a
    fit on one device in one process, to round-off in float64; a checkpointed run
    stopped after its first checkpoint resumes to the uninterrupted run's model
    bit for bit, and only the first process writes the checkpoint."""
    processes = _launch(tmp_path)
    # The single-process fit, while they run.
    try:
        single, history = lagrax.fit(**settings(), devices=jax.devices()[:1])
    finally:
        _wait(processes)
    results = [np.load(tmp_path / f"process{i}.npz") for i in range(2)]
    expected = arrays(single)
    assert len(expected) == 4  # the MLP's two weights and two biases

    for result in results:
        for i, x in enumerate(expected):
            np.testing.assert_allclose(result[f"plain{i}"], x, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(result["loss"], history.loss, rtol=1e-10)
        np.testing.assert_allclose(result["eval_loss"], history.eval_loss, rtol=1e-10)
    for name in set(results[0].files) - {"writes"}:  # the same, exactly
        np.testing.assert_array_equal(results[0][name], results[1][name], name)

    # The resumed run (from another starting model: only the checkpoint can make
    # it right) ends where the uninterrupted one does.
    for result in results:
        for i in range(len(expected)):
            np.testing.assert_array_equal(result[f"resumed{i}"], result[f"plain{i}"])
        np.testing.assert_array_equal(result["resumed_loss"], result["loss"])
        np.testing.assert_array_equal(result["resumed_eval_loss"], result["eval_loss"])
    # Process 0 wrote the checkpoints at steps 10 (before the stop), 20 and 30;
    # process 1 none, and no temporary file is left.
    assert [int(result["writes"]) for result in results] == [3, 0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "process0.npz",
        "process1.npz",
        "run.lagrax",
    ]
