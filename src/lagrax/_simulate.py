import diffrax
import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, Float, PyTree

from ._custom_types import Acceleration, ForceFn, LagrangianLike, Position, Velocity
from ._mechanics import acceleration
from ._misc import check_state


State = tuple[Position, Velocity]


class LagrangianTerm(diffrax.AbstractTerm):
    r"""The Euler–Lagrange equations of a Lagrangian as a Diffrax term.

    The state is the tuple `(q, qdot)` and the vector field is `(q̇, q̈(t, q, q̇))`
    with `q̈` from `lagrax.acceleration`; the control is time. Use it with
    `diffrax.diffeqsolve` and any Diffrax ODE solver, and with the lagrax solvers,
    which also read `lagrangian` and call `acceleration` directly.

    A singular mass matrix met during the solve raises a runtime error (see
    `lagrax.acceleration`).

    !!! example

        ```python
        term = lagrax.LagrangianTerm(lagrax.systems.DoublePendulum())
        sol = diffrax.diffeqsolve(term, diffrax.Tsit5(), 0.0, 10.0, 0.01, (q0, qdot0))
        ```
    """

    lagrangian: LagrangianLike
    force: ForceFn | None = None

    def __check_init__(self):
        if not callable(self.lagrangian):
            raise TypeError(
                f"`lagrangian` must be a callable (q, qdot) -> scalar, got "
                f"{type(self.lagrangian).__name__}."
            )
        if self.force is not None and not callable(self.force):
            raise TypeError(
                f"`force` must be a callable (t, q, qdot) -> Q or None, got "
                f"{type(self.force).__name__}."
            )

    def acceleration(self, t, q: Position, qdot: Velocity) -> Acceleration:
        """`q̈` at time `t` and state `(q, qdot)`, including the force if any."""
        force = None if self.force is None else self.force(t, q, qdot)
        return acceleration(self.lagrangian, q, qdot, force=force)

    def vf(self, t, y: State, args: PyTree) -> State:
        if not (isinstance(y, tuple) and len(y) == 2):
            raise ValueError(
                "The state of a LagrangianTerm must be the tuple `(q, qdot)`, got "
                f"{jtu.tree_structure(y)}."
            )
        q, qdot = y
        return qdot, self.acceleration(t, q, qdot)

    def contr(self, t0, t1, **kwargs):
        return t1 - t0

    def prod(self, vf: PyTree[Array], control) -> PyTree[Array]:
        return jtu.tree_map(lambda v: jnp.asarray(control, v.dtype) * v, vf)


LagrangianTerm.__init__.__doc__ = """**Arguments:**

- `lagrangian`: a callable `(q, qdot) -> scalar` for one state, such as an
    `AbstractLagrangian`.
- `force`: an optional generalized (non-conservative) force, a callable
    `(t, q, qdot) -> Q` with `Q` of shape `(dof,)`.
"""


class Trajectory(eqx.Module):
    """A simulated trajectory, sampled at the requested times.

    **Fields:**

    - `ts`: the times, shape `(times,)`.
    - `q`: positions, shape `(times, dof)`.
    - `qdot`: velocities, shape `(times, dof)`.
    """

    ts: Float[Array, " times"]
    q: Float[Array, "times dof"]
    qdot: Float[Array, "times dof"]


def simulate(
    lagrangian: LagrangianLike,
    q0: Position,
    qdot0: Velocity,
    ts: Float[Array, " times"],
    *,
    solver: diffrax.AbstractSolver | None = None,
    dt0: float | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-6,
    force: ForceFn | None = None,
    stepsize_controller: diffrax.AbstractStepSizeController | None = None,
    max_steps: int | None = 65536,
    adjoint: diffrax.AbstractAdjoint = diffrax.RecursiveCheckpointAdjoint(),
    throw: bool = True,
) -> Trajectory:
    """Integrate the Euler–Lagrange equations of `lagrangian` from `(q0, qdot0)`.

    A thin layer over `diffrax.diffeqsolve` with `LagrangianTerm`: the solve runs
    from `ts[0]` to `ts[-1]` and saves at every entry of `ts`.

    **Arguments:**

    - `lagrangian`: a callable `(q, qdot) -> scalar` for one state.
    - `q0`, `qdot0`: the initial state, each of shape `(dof,)`.
    - `ts`: increasing save times, shape `(times,)`, at least two.
    - `solver`: any Diffrax ODE solver or lagrax solver. Default `diffrax.Tsit5()`.
    - `dt0`: the initial step (adaptive solvers; optional) or the fixed step
        (solvers without an error estimate, such as the lagrax solvers; required).
    - `rtol`, `atol`: tolerances of the default `diffrax.PIDController`, used with
        adaptive solvers.
    - `force`: optional generalized force, a callable `(t, q, qdot) -> Q`.
    - `stepsize_controller`: overrides the default controller (a `PIDController`
        for adaptive solvers, `ConstantStepSize` otherwise); for example
        `diffrax.ConstantStepSize()` runs `Tsit5` with fixed steps.
    - `max_steps`: the solver's step budget, as in `diffrax.diffeqsolve`.
    - `adjoint`: how to differentiate the solve, as in `diffrax.diffeqsolve`.
    - `throw`: whether a failed solve raises (as in `diffrax.diffeqsolve`).

    **Returns:**

    A `Trajectory`.
    """
    check_state(q0, qdot0, q_name="q0", qdot_name="qdot0")
    if jnp.ndim(ts) != 1 or jnp.shape(ts)[0] < 2:
        raise ValueError(
            "`ts` must be a 1-D array of at least two times, got shape "
            f"{jnp.shape(ts)}."
        )
    if solver is None:
        solver = diffrax.Tsit5()
    if not isinstance(solver, diffrax.AbstractSolver):
        raise TypeError(f"`solver` must be a diffrax.AbstractSolver, got {solver!r}.")
    adaptive = isinstance(solver, diffrax.AbstractAdaptiveSolver)
    if stepsize_controller is None:
        if adaptive:
            stepsize_controller = diffrax.PIDController(rtol=rtol, atol=atol)
        else:
            stepsize_controller = diffrax.ConstantStepSize()
    if dt0 is None and not isinstance(stepsize_controller, diffrax.PIDController):
        raise ValueError(
            f"`dt0` is required with {type(solver).__name__} and "
            f"{type(stepsize_controller).__name__}: it is the fixed step size."
        )
    if isinstance(dt0, int | float) and not dt0 > 0:
        raise ValueError(f"`dt0` must be positive, got {dt0!r}.")
    sol = diffrax.diffeqsolve(
        LagrangianTerm(lagrangian, force),
        solver,
        t0=ts[0],
        t1=ts[-1],
        dt0=dt0,
        y0=(q0, qdot0),
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=stepsize_controller,
        max_steps=max_steps,
        adjoint=adjoint,
        throw=throw,
    )
    q, qdot = sol.ys
    return Trajectory(ts=sol.ts, q=q, qdot=qdot)
