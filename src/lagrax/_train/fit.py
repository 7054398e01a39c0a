"""The training loop: a jitted step that users can call themselves, and `fit`."""

import math
import os
import pathlib
import tempfile
import warnings
from collections.abc import Callable
from typing import TypeGuard

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray, PyTree
from tqdm.auto import tqdm

from .._misc import check_int
from .._serialisation import key_fingerprint, read_checkpoint, write_checkpoint
from .data import AbstractDataset
from .fingerprint import (
    check_close,
    check_run,
    data_fingerprint,
    describe,
    optimizer_fingerprint,
    schedule_fingerprint,
)


class History(eqx.Module):
    """What happened during `lagrax.fit`.

    **Fields:**

    - `loss`: the training loss of each step, on that step's minibatch, before its
        update (finite even for a skipped step whose gradient alone was not).
    - `skipped`: whether each step was skipped because its loss or gradient was not
        finite (the model and optimizer state were left unchanged).
    - `eval_step`: the number of steps completed at each evaluation.
    - `eval_loss`: the loss on the held-out data at each evaluation.
    - `metrics`: for each metric name, its value on the held-out data at each
        evaluation.
    """

    loss: Float[np.ndarray, " steps"]
    skipped: Bool[np.ndarray, " steps"]
    eval_step: Int[np.ndarray, " evals"]
    eval_loss: Float[np.ndarray, " evals"]
    metrics: dict[str, Float[np.ndarray, " evals"]]

    @property
    def num_skipped(self) -> int:
        """The number of skipped steps."""
        return int(np.sum(self.skipped))

    def __getitem__(self, name: str) -> np.ndarray:
        """`history["loss"]` is `history.loss`; a metric's name gives its values."""
        if name in self.metrics:
            return self.metrics[name]
        if name in ("loss", "skipped", "eval_step", "eval_loss"):
            return getattr(self, name)
        raise KeyError(name)


@eqx.filter_jit
def train_step(
    model: PyTree,
    opt_state: optax.OptState,
    batch: PyTree,
    *,
    loss: Callable[[PyTree, PyTree], Float[Array, ""]],
    optimizer: optax.GradientTransformation,
) -> tuple[PyTree, optax.OptState, Float[Array, ""], Bool[Array, ""]]:
    """One optimization step: the loss and its gradient, then an Optax update.

    The gradient is taken with respect to the model's floating-point arrays
    (`eqx.filter(model, eqx.is_inexact_array)`, which is also what the optimizer
    state must be initialized from). If the loss, any gradient entry, any entry of
    the optimizer's update or of the updated parameters is not finite (a NaN in the
    batch, a singular mass matrix, a diverging rollout, an infinite learning rate)
    the step is skipped: the model and the optimizer state (including a schedule's
    and Adam's step counts) are returned unchanged and `skipped` is true. Compiled
    with `eqx.filter_jit`; `lagrax.fit` is a loop over this function.

    !!! example

        ```python
        optimizer = optax.adam(1e-3)
        opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
        for batch in batches:
            model, opt_state, value, skipped = lagrax.train_step(
                model, opt_state, batch,
                loss=lagrax.acceleration_loss, optimizer=optimizer,
            )
        ```

    **Arguments:**

    - `model`: the model, a pytree.
    - `opt_state`: the optimizer's state.
    - `batch`: the data the loss is evaluated on.
    - `loss`: a function `(model, batch) -> scalar`, such as
        `lagrax.acceleration_loss`.
    - `optimizer`: an Optax gradient transformation. One with a line search, such
        as `optax.lbfgs()`, gets the batch's loss as `value_fn` (with `value` and
        `grad`): with the whole dataset as the batch it is a full-batch
        quasi-Newton method, which can fit far more precisely than Adam.

    **Returns:**

    `(model, opt_state, loss_value, skipped)`: the updated model and optimizer
    state, the loss before the update and whether the step was skipped.
    """
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def objective(p):
        return loss(eqx.combine(p, static), batch)

    value, grads = jax.value_and_grad(objective)(params)
    # An optimizer with a line search (`optax.lbfgs`) evaluates the batch's loss
    # itself: `GradientTransformationExtraArgs` take it as `value_fn`, and those
    # that do not need it (`optax.adam`, any `optax.chain`) ignore it.
    # With 64-bit JAX its step sizes are float64, and so are the points it tries:
    # the model sees them in its own dtypes.
    extra = {}
    if isinstance(optimizer, optax.GradientTransformationExtraArgs):

        def value_fn(p):
            return objective(jtu.tree_map(lambda x, y: x.astype(y.dtype), p, params))

        extra = dict(value=value, grad=grads, value_fn=value_fn)
    # Optax mixes Python scalars with integer step counts (Adam's bias correction,
    # schedules), which JAX's strict dtype promotion rejects.
    with jax.numpy_dtype_promotion("standard"):
        updates, new_opt_state = optimizer.update(grads, opt_state, params, **extra)
        new_params = optax.apply_updates(params, updates)
    # An update can fail where the gradient did not (a learning rate of inf, an
    # optimizer dividing by zero): it, and the parameters it makes, are checked too.
    finite = jnp.isfinite(value)
    for x in jtu.tree_leaves((grads, updates, new_params)):
        finite = finite & jnp.all(jnp.isfinite(x))

    def keep(new, old):
        # In the old dtype too: a step may not change the state's types, which a
        # checkpoint and the compiled step rely on.
        if not eqx.is_array(new):
            return new
        # (Older Optax returns some integer counters in another width.)
        return jnp.where(finite, new.astype(jnp.result_type(old)), old)

    params = jtu.tree_map(keep, new_params, params)
    opt_state = jtu.tree_map(keep, new_opt_state, opt_state)
    return eqx.combine(params, static), opt_state, value, ~finite


@eqx.filter_jit
def _minibatch_step(
    model, opt_state, data, order, batch_index, *, batch_size, loss, optimizer, mesh
):
    indices = lax.dynamic_slice_in_dim(order, batch_index * batch_size, batch_size)
    batch = data[indices]
    if mesh is not None:  # split the minibatch's samples over the devices
        batch = jtu.tree_map(
            lambda x: _constrain(x, mesh, batch_size), batch, is_leaf=eqx.is_array
        )
    return train_step(model, opt_state, batch, loss=loss, optimizer=optimizer)


_BATCH_AXIS = "batch"


def _constrain(x, mesh, batch_size: int):
    """A minibatch leaf sharded over the mesh along its samples (a leaf without a
    sample axis, such as a trajectory's times, replicated). Placement only: the
    values computed are the same."""
    if not eqx.is_array(x):
        return x
    batched = x.ndim >= 1 and x.shape[0] == batch_size
    spec = PartitionSpec(_BATCH_AXIS) if batched else PartitionSpec()
    return lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def _data_parallel_mesh(devices, batch_size: int) -> Mesh | None:
    """The one-axis mesh of data-parallel training over `devices` (default all of
    JAX's), or None for a single device."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices or not all(isinstance(d, jax.Device) for d in devices):
        raise TypeError(
            f"`devices` must be None or a list of jax.Device, got {devices!r}."
        )
    processes = {d.process_index for d in devices}
    if jax.process_index() not in processes:
        raise ValueError(
            f"`devices` must include devices of this process ({jax.process_index()}),"
            f" got only devices of processes {sorted(processes)}: each process "
            "trains on its own devices (`jax.local_devices()`) or, together with "
            "every other, on `jax.devices()`."
        )
    if len(processes) > 1 and len(processes) != jax.process_count():
        raise ValueError(
            f"`devices` must be devices of this process only or of all "
            f"{jax.process_count()} processes, got devices of processes "
            f"{sorted(processes)}."
        )
    if len(devices) == 1:
        return None
    if batch_size % len(devices):
        raise ValueError(
            f"`batch_size` ({batch_size}) must be a multiple of the number of "
            f"devices ({len(devices)}) to split each minibatch evenly over them; or "
            "pass `devices=jax.devices()[:1]` to train on one."
        )
    return Mesh(np.asarray(devices), (_BATCH_AXIS,))


def _spans_processes(mesh: Mesh | None) -> TypeGuard[Mesh]:
    return mesh is not None and mesh.is_multi_process


def _replicated(tree, mesh: Mesh | None):
    """`tree`'s arrays copied to every device of `mesh` (unchanged without one).

    Across processes, each process gives its own copy of the same values (which
    `_check_same_run` has checked), placed on its own devices of the mesh: one
    global array, replicated, with no communication."""
    if mesh is None:
        return tree
    sharding = NamedSharding(mesh, PartitionSpec())
    arrays, static = eqx.partition(tree, eqx.is_array)
    if _spans_processes(mesh):
        local = mesh.local_devices

        def place(x):
            pieces = [jax.device_put(x, device) for device in local]
            return jax.make_array_from_single_device_arrays(x.shape, sharding, pieces)

        arrays = jtu.tree_map(place, arrays)
    else:
        arrays = jax.device_put(arrays, sharding)
    return eqx.combine(arrays, static)


def _local(tree, mesh: Mesh | None):
    """`tree`'s global replicated arrays as arrays on this process's devices of
    `mesh`, without a copy: what a caller can compute with, print or save. Unchanged
    unless `mesh` spans several processes."""
    if not _spans_processes(mesh):
        return tree
    sharding = NamedSharding(mesh.local_mesh, PartitionSpec())

    def view(x):
        if not eqx.is_array(x):
            return x
        pieces = [shard.data for shard in x.addressable_shards]
        return jax.make_array_from_single_device_arrays(x.shape, sharding, pieces)

    return jtu.tree_map(view, tree)


def _check_same_run(mesh: Mesh, run: tuple) -> None:
    """Raise in every process unless every process gives the same `run` (its
    settings, model, optimizer state and data): each process computes its own
    steps, which would silently differ. One all-gather of a SHA-256; also a
    barrier, so that no process writes a checkpoint before all have read it."""
    digest = bytes.fromhex(data_fingerprint(run))
    digests = multihost_utils.process_allgather(np.frombuffer(digest, np.uint8))
    differ = [i for i, d in enumerate(np.asarray(digests)) if d.tobytes() != digest]
    if differ:
        raise ValueError(
            f"`fit` over the devices of {jax.process_count()} processes needs the "
            "same `model`, `data`, `test_data`, `key`, settings and resumed "
            f"checkpoint in every process; process {jax.process_index()} differs "
            f"from process(es) {differ}."
        )


def _save(checkpoint, state, info, mesh: Mesh | None) -> None:
    """Write a checkpoint; across processes, the first one alone writes it, and
    all wait until it has (a barrier), so that every process reads the new file
    once `fit` returns."""
    if not _spans_processes(mesh):
        write_checkpoint(checkpoint, state, info)
        return
    if jax.process_index() == 0:
        write_checkpoint(checkpoint, _local(state, mesh), info)
    multihost_utils.sync_global_devices(f"lagrax.fit checkpoint {info['step']}")


@eqx.filter_jit
def _evaluate(model, data, loss, metrics):
    return loss(model, data), {name: fn(model, data) for name, fn in metrics.items()}


def _check_data(data, name: str) -> int:
    if not isinstance(data, AbstractDataset):
        raise TypeError(
            f"`{name}` must be a dataset: an AccelerationData, a TrajectoryData or "
            "an instance of your own subclass of lagrax.AbstractDataset, got "
            f"{type(data).__name__}."
        )
    return len(data)


def _check_checkpoint(checkpoint: str | os.PathLike) -> None:
    """Fail before training, not after the first `checkpoint_every` steps, when the
    checkpoint cannot be written: by the same route as the writer, a temporary
    file in the checkpoint's folder."""
    path = pathlib.Path(checkpoint)
    folder = path.parent
    if path.is_dir():
        raise ValueError(f"`checkpoint` must be a file, but {str(path)!r} is a folder.")
    if not folder.is_dir():
        problem = "is not a folder" if folder.exists() else "does not exist"
        raise ValueError(
            f"`checkpoint` {str(path)!r} cannot be written: its folder "
            f"{str(folder)!r} {problem}."
        )
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}."):
            pass
    except OSError as e:
        raise ValueError(
            f"`checkpoint` {str(path)!r} cannot be written: its folder "
            f"{str(folder)!r} does not take new files ({e.strerror})."
        ) from None


def fit(
    model: PyTree,
    loss: Callable[[PyTree, PyTree], Float[Array, ""]],
    data: AbstractDataset,
    *,
    optimizer: optax.GradientTransformation,
    steps: int,
    batch_size: int,
    key: PRNGKeyArray,
    test_data: AbstractDataset | None = None,
    metrics: dict[str, Callable[[PyTree, PyTree], Float[Array, ""]]] | None = None,
    eval_every: int | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    max_consecutive_skips: int | None = 100,
    progress: bool = True,
    # jaxlib has no stub for `Device`, so pyright takes `jax.Device` for a variable.
    devices: list[jax.Device] | None = None,  # pyright: ignore[reportInvalidTypeForm]
) -> tuple[PyTree, History]:
    """Train a model by minibatch gradient descent with Optax.

    A convenience loop over `lagrax.train_step`: the optimizer state is initialized
    from `eqx.filter(model, eqx.is_inexact_array)`; each epoch shuffles the data
    with `jr.fold_in(key, epoch)` and walks through it in minibatches of
    `batch_size` (dropping the remainder); steps whose loss, gradient or update is
    not finite are skipped and counted (with a warning at the end, and a
    `RuntimeError` if every step was skipped); the held-out loss
    and metrics are recorded every `eval_every` steps; a progress bar shows the
    running loss. Any Optax schedule works: the paper used Adam with a one-cycle
    schedule, `optax.adam(optax.cosine_onecycle_schedule(steps, 1e-3))`.

    With `checkpoint`, the model, optimizer state, step count and history are
    written there (atomically) every `checkpoint_every` steps and at the end,
    together with what defines the run: `steps`, `batch_size`, `key`, the size of
    `data` and a SHA-256 of its arrays (and of `test_data`'s), a fingerprint of
    `optimizer` (a hash of its updates on probe gradients, so another learning rate
    or schedule differs, and the size of its update at every step up to `steps`, so
    a schedule that differs between probe steps does too), `loss` (a description
    of it, its name and the values bound to it by `functools.partial` or a
    closure, and its value on the first `batch_size` samples at the checkpoint's
    model, so an edited loss of the same name differs) and the names of `metrics`.
    With
    `resume=True` and an existing checkpoint, training continues from it up to
    `steps` in total. Minibatches depend only on `key` and the step number, so a
    run that is stopped and resumed ends bit-identical to one that was not.

    A checkpoint written by a different run is refused with a `ValueError` naming
    the setting that differs, with one exception: a finished run (one that did all
    its `steps`) may be extended, by resuming it with a larger `steps` and every
    other setting the same; training continues from it to the new total. Its
    optimizer must not depend on `steps`: a schedule over the total number of steps,
    such as the one-cycle schedule above, is another optimizer for another `steps`,
    and is refused. Resuming with fewer steps than the checkpoint has done, or an
    unfinished checkpoint with a different `steps`, is refused too.

    **Arguments:**

    - `model`: the model, such as an `MLPLagrangian` or a baseline.
    - `loss`: a function `(model, batch) -> scalar`, such as
        `lagrax.acceleration_loss` or
        `functools.partial(lagrax.rollout_loss, window=5, ...)`.
    - `data`: the training set: an `AccelerationData`, a `TrajectoryData` (whose
        trajectories are the samples) or an instance of your own subclass of
        `lagrax.AbstractDataset`.
    - `optimizer`: an Optax gradient transformation; one with a line search
        (`optax.lbfgs()`) evaluates the minibatch's loss itself (see
        `lagrax.train_step`), and with `batch_size = len(data)` is a full-batch
        quasi-Newton fit.
    - `steps`: the total number of optimization steps.
    - `batch_size`: samples per minibatch, at most `len(data)`.
    - `key`: a JAX PRNG key for the shuffling.
    - `test_data`: held-out data for `loss` and `metrics`, optional.
    - `metrics`: named functions `(model, test_data) -> scalar`, such as
        `{"acceleration": lagrax.acceleration_error}`.
    - `eval_every`: evaluate on `test_data` every this many steps (and at the
        end); default a tenth of `steps`.
    - `checkpoint`: a file to write checkpoints to, optional. Its folder must exist
        and be writable; this is checked before the first step.
    - `checkpoint_every`: steps between checkpoints; default a tenth of `steps`.
    - `resume`: continue from `checkpoint` if it exists (see above for when it is
        refused).
    - `max_consecutive_skips`: raise a `RuntimeError` once this many steps in a row
        were skipped (the model is stuck: look for NaNs in the data, a solver
        running out of `max_steps`, a Lagrangian with a singular mass matrix
        everywhere); `None` never raises.
    - `progress`: show a progress bar.
    - `devices`: the devices to train on, data-parallel; default all of
        `jax.devices()`. With more than one, each minibatch's samples are split
        evenly over them (`batch_size` must be a multiple of their number) and
        the model, the optimizer state and `data` are replicated on each: a
        `jax.sharding.Mesh` over the batch, compiled by XLA's SPMD partitioner,
        with the same results as on one device up to the order of floating-point
        sums. Across processes (several hosts, after
        `jax.distributed.initialize()` in each), every process calls `fit` with
        the same `model`, `data`, `key` and settings and `devices` of every
        process (`jax.devices()`), or its own only (`jax.local_devices()`, to
        train alone); the processes check that they agree, and each returns the
        same model, on its own devices. Only process 0 writes `checkpoint`, and
        every process resumes from it: on several hosts it must be on a shared
        filesystem. See the multi-process page of the documentation.

    **Returns:**

    `(model, history)`: the trained model and a `lagrax.History`.
    """
    steps = check_int(steps, "steps", low=0)
    batch_size = check_int(batch_size, "batch_size")
    if not callable(loss):
        raise TypeError(
            f"`loss` must be a function (model, batch) -> scalar, got {loss!r}."
        )
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise TypeError(
            f"`optimizer` must be an optax.GradientTransformation, got {optimizer!r}."
        )
    num_samples = _check_data(data, "data")
    if batch_size > num_samples:
        raise ValueError(
            f"`batch_size` ({batch_size}) must not exceed the number of samples in "
            f"`data` ({num_samples})."
        )
    metrics = {} if metrics is None else dict(metrics)
    for name, fn in metrics.items():
        if not (isinstance(name, str) and callable(fn)):
            raise TypeError(
                "`metrics` must map names to functions (model, data) -> scalar."
            )
    if test_data is not None:
        _check_data(test_data, "test_data")
    elif metrics:
        raise ValueError("`metrics` are evaluated on `test_data`, which is missing.")
    default_every = max(1, steps // 10)
    eval_every = default_every if eval_every is None else eval_every
    checkpoint_every = default_every if checkpoint_every is None else checkpoint_every
    eval_every = check_int(eval_every, "eval_every")
    checkpoint_every = check_int(checkpoint_every, "checkpoint_every")
    if max_consecutive_skips is not None:
        check_int(max_consecutive_skips, "max_consecutive_skips")
    if checkpoint is not None:
        _check_checkpoint(checkpoint)
    elif resume:
        raise ValueError("`resume=True` needs a `checkpoint` file to resume from.")

    mesh = _data_parallel_mesh(devices, batch_size)
    params = eqx.filter(model, eqx.is_inexact_array)
    opt_state = optimizer.init(params)
    losses: list[float] = []
    skipped: list[bool] = []
    eval_steps: list[int] = []
    eval_losses: list[float] = []
    metric_values: dict[str, list[float]] = {name: [] for name in metrics}
    start = 0
    info = None  # a resumed checkpoint's
    run = {}
    schedule: list[float] = []
    where = ""  # the checkpoint, as messages name it
    if checkpoint is not None:
        # Everything that defines the run, for a resumed run to be this one.
        run = dict(
            steps=steps,
            batch_size=batch_size,
            num_samples=num_samples,
            data=data_fingerprint(data),
            key=key_fingerprint(key),
            optimizer=optimizer_fingerprint(optimizer, params),
            loss=describe(loss),
            test_data=None if test_data is None else data_fingerprint(test_data),
        )
        schedule = schedule_fingerprint(optimizer, params, steps)
    if resume and checkpoint is not None and pathlib.Path(checkpoint).exists():
        (model, opt_state), info = read_checkpoint(checkpoint, (model, opt_state))
        where = repr(os.fspath(checkpoint))
        check_run(where, info, run, recorded=("schedule", "loss_probe"))
        recorded = info["steps"]  # fewer than `steps` when extending a finished run
        check_close(
            where,
            "schedule",
            info["schedule"],
            schedule
            if recorded == steps
            else schedule_fingerprint(optimizer, params, recorded),
            "its learning rate differs at some step",
        )
        start = info["step"]
        saved = info["history"]
        losses, skipped = saved["loss"], saved["skipped"]
        eval_steps, eval_losses = saved["eval_step"], saved["eval_loss"]
        if set(saved["metrics"]) != set(metrics):
            raise ValueError(
                f"The checkpoint {where} recorded the metrics "
                f"{sorted(saved['metrics'])}, this run asks for {sorted(metrics)}."
            )
        metric_values = saved["metrics"]

    def history_dict():
        return dict(
            loss=losses,
            skipped=skipped,
            eval_step=eval_steps,
            eval_loss=eval_losses,
            metrics=metric_values,
        )

    across = _spans_processes(mesh)
    if _spans_processes(mesh):
        _check_same_run(
            mesh,
            (
                [steps, batch_size, key_fingerprint(key), start, resume],
                [checkpoint is None, eval_every, checkpoint_every, sorted(metrics)],
                [d.id for d in mesh.devices.flat],
                (model, opt_state, data, test_data),
            ),
        )
        test_data = _replicated(test_data, mesh)
    model, opt_state, data = _replicated((model, opt_state, data), mesh)

    def shared(x):
        # What every process computes alike each step (the epoch's order, the
        # batch's index), as a global array where the step spans processes; an
        # ordinary one, as JAX places it, where it does not.
        return _replicated(x, mesh) if across else x

    def probe_loss() -> list[float]:
        # The loss is told apart by its value too, at the checkpoint's model on
        # the first `batch_size` samples (an edited loss keeps its name): through
        # the training step itself, its update discarded, so nothing compiles anew.
        _, _, value, _ = _minibatch_step(
            model,
            opt_state,
            data,
            *shared((jnp.arange(num_samples), jnp.asarray(0))),
            batch_size=batch_size,
            loss=loss,
            optimizer=optimizer,
            mesh=mesh,
        )
        return [float(value)]

    if info is not None:
        check_close(
            where,
            "loss_probe",
            info["loss_probe"],
            probe_loss(),
            "its value differs on the same model and samples",
        )
    batches_per_epoch = num_samples // batch_size
    order, order_epoch = None, None
    pending = []
    running = math.nan
    consecutive = 0
    bar = tqdm(
        total=steps,
        initial=min(start, steps),
        disable=not progress or (across and jax.process_index() != 0),
        desc="fit",
    )

    def flush():
        nonlocal running, consecutive
        for value, skip in pending:
            value, skip = float(value), bool(skip)
            losses.append(value)
            skipped.append(skip)
            consecutive = consecutive + 1 if skip else 0
            if not skip:
                running = (
                    value if math.isnan(running) else 0.95 * running + 0.05 * value
                )
        bar.update(len(pending))
        pending.clear()
        bar.set_postfix(loss=f"{running:.4g}", skipped=sum(skipped), refresh=False)
        if max_consecutive_skips is not None and consecutive >= max_consecutive_skips:
            raise RuntimeError(
                f"lagrax.fit: the last {consecutive} steps were all skipped because "
                "their loss, gradient or update was not finite, so the model has "
                "stopped changing. Look for NaNs in the data, a rollout exceeding its "
                "`max_steps`, or a mass matrix singular on the data."
            )

    try:
        for step in range(start, steps):
            epoch, batch_index = divmod(step, batches_per_epoch)
            if epoch != order_epoch:
                order = jr.permutation(jr.fold_in(key, epoch), num_samples)
                order = shared(order)
                order_epoch = epoch
            model, opt_state, value, skip = _minibatch_step(
                model,
                opt_state,
                data,
                order,
                shared(jnp.asarray(batch_index)),
                batch_size=batch_size,
                loss=loss,
                optimizer=optimizer,
                mesh=mesh,
            )
            pending.append((value, skip))
            done = step + 1
            evaluate = test_data is not None and (
                done % eval_every == 0 or done == steps
            )
            at_checkpoint = done % checkpoint_every == 0 or done == steps
            if evaluate or at_checkpoint or len(pending) >= 32:
                flush()
            if evaluate:
                test_loss, test_metrics = _evaluate(model, test_data, loss, metrics)
                eval_steps.append(done)
                eval_losses.append(float(test_loss))
                for name, value in test_metrics.items():
                    metric_values[name].append(float(value))
            if checkpoint is not None and at_checkpoint:
                info = dict(
                    run,
                    step=done,
                    history=history_dict(),
                    schedule=schedule,
                    loss_probe=probe_loss(),
                )
                _save(checkpoint, (model, opt_state), info, mesh)
    finally:
        bar.close()

    history = History(
        loss=np.asarray(losses, dtype=np.float64).reshape(-1),
        skipped=np.asarray(skipped, dtype=bool).reshape(-1),
        eval_step=np.asarray(eval_steps, dtype=np.int64).reshape(-1),
        eval_loss=np.asarray(eval_losses, dtype=np.float64).reshape(-1),
        metrics={
            k: np.asarray(v, dtype=np.float64).reshape(-1)
            for k, v in metric_values.items()
        },
    )
    if steps and history.num_skipped == len(losses):
        raise RuntimeError(
            f"lagrax.fit skipped all {len(losses)} steps: each one's loss, "
            "gradient or update was not finite, so the model is the one it started "
            "from. Look for NaNs in the data, a learning rate that is not finite, a "
            "rollout exceeding its `max_steps`, or a mass matrix singular on the "
            "data."
        )
    if history.num_skipped:
        warnings.warn(
            f"lagrax.fit skipped {history.num_skipped} of {len(losses)} steps whose "
            "loss, gradient or update was not finite (see history.skipped).",
            RuntimeWarning,
            stacklevel=2,
        )
    return _local(model, mesh), history
