"""Diffrax terms for second-order dynamics, and the one seam between models and
everything that trains or integrates them.

A model is either a Lagrangian (any callable `L(q, q̇)`, usually an
`AbstractLagrangian`) or an `AbstractDynamics` baseline that predicts `q̈` itself.
`as_term` turns either into a term; simulation, rollouts, losses and metrics ask for
`q̈` only through it.
"""

import abc

import diffrax
import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, Bool, PyTree

from ._baselines import AbstractDynamics
from ._constraint import ConstraintFn
from ._custom_types import Acceleration, ForceFn, LagrangianLike, Position, Velocity
from ._mechanics import checked_acceleration, checked_constrained_acceleration


State = tuple[Position, Velocity]


def split_state(y, owner: str) -> State:
    """`(q, qdot)` from the state of a second-order solve, refused at trace time
    unless a solve can integrate it: it must be that tuple, in single or double
    precision.

    This is the seam every integration passes through: a term's vector field
    (`AbstractSecondOrderTerm.vf`, which Diffrax's solvers evaluate) and every
    lagrax solver's `init` and `step` read their state here. So `lagrax.simulate`,
    `lagrax.rollout`, the rollout losses and `diffrax.diffeqsolve` with a lagrax
    term or a lagrax solver refuse the same states, before anything runs.

    float16 and bfloat16 states (and narrower ones) are refused: their rounding
    error, 1e-3 and 1e-2 relative, is larger than the error a solve is asked to
    keep, and neither an adaptive controller nor a solver's checks can see it, so
    such a solve reports success far from the motion (measured: a double pendulum
    in float16 at `rtol=1e-2` ended at (−0.32, 0.74) instead of (0.26, −0.002)).
    Integrate in float32 or float64, and cast the result (`lagrax.cast`) if a
    low-precision copy is wanted. (`diffeqsolve` itself promotes a state to the
    dtype of its times: half-precision states with float32 times are integrated
    in float32.)
    """
    if not (isinstance(y, tuple) and len(y) == 2):
        raise ValueError(
            f"{owner} integrates second-order systems: its state must be the tuple "
            f"`(q, qdot)`, got {jtu.tree_structure(y)}."
        )
    for x in jtu.tree_leaves(y):
        dtype = jnp.result_type(x)
        if jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32:
            raise TypeError(
                f"{owner} cannot integrate a {dtype} state: its rounding error "
                f"({float(jnp.finfo(dtype).eps):.0e}) exceeds any useful tolerance and "
                "the solve would report success far from the motion. Integrate in "
                "float32 or float64 (cast the state, and a model with parameters, "
                "with lagrax.cast)."
            )
    return y


class AbstractSecondOrderTerm(diffrax.AbstractTerm):
    """A Diffrax term for a second-order system: the state is the tuple
    `(q, qdot)`, the vector field `(velocity, acceleration)` and the control time.

    The lagrax solvers take these terms: `VelocityVerlet` any of them,
    `VariationalMidpoint` and `GaussLegendre` a `LagrangianTerm`. Subclasses
    implement `dynamics`.
    """

    @abc.abstractmethod
    def dynamics(
        self, t, q: Position, qdot: Velocity
    ) -> tuple[Velocity, Acceleration, Bool[Array, ""]]:
        """**Arguments:**

        - `t`: the time.
        - `q`, `qdot`: the state, each of shape `(dof,)`.

        **Returns:**

        `(velocity, acceleration, singular)`: the rate of change of `q` (`qdot`
        itself for a Lagrangian), `q̈`, and whether `q̈` is undetermined at this
        state (a singular mass matrix).
        """

    def vf(self, t, y: State, args: PyTree) -> State:
        q, qdot = split_state(y, f"A {type(self).__name__}")
        velocity, qddot, _ = self.dynamics(t, q, qdot)
        return velocity, qddot

    def contr(self, t0, t1, **kwargs):
        return t1 - t0

    def prod(self, vf: PyTree[Array], control) -> PyTree[Array]:
        return jtu.tree_map(lambda v: jnp.asarray(control, v.dtype) * v, vf)


class LagrangianTerm(AbstractSecondOrderTerm):
    r"""The Euler–Lagrange equations of a Lagrangian as a Diffrax term.

    The state is the tuple `(q, qdot)` and the vector field is `(q̇, q̈(t, q, q̇))`
    with `q̈` from `lagrax.acceleration`; the control is time. Use it with
    `diffrax.diffeqsolve` and any Diffrax ODE solver, and with the lagrax solvers
    (the variational ones read `lagrangian` and `force` themselves).

    A singular mass matrix met during the solve raises a runtime error with
    `throw=True` (the default); with `throw=False` its acceleration is NaN instead,
    and so is that acceleration's gradient: the lagrax solvers then report
    `lagrax.RESULTS.singular_mass_matrix`, and a loss built on the solve is not
    finite, which `lagrax.fit` skips. `lagrax.simulate(..., throw=...)` sets this.

    !!! example

        ```python
        term = lagrax.LagrangianTerm(lagrax.systems.DoublePendulum())
        sol = diffrax.diffeqsolve(term, diffrax.Tsit5(), 0.0, 10.0, 0.01, (q0, qdot0))
        ```

    **Extra forces and controls.** Non-conservative forces enter the
    Euler–Lagrange equations as a generalized force `Q(t, q, q̇)`, which `force`
    takes; every solver, lagrax's variational ones included, then integrates
    `H q̈ = ∂L/∂q − (∂²L/∂q̇∂q) q̇ + Q`. A control input `u(t)` given as samples is
    a Diffrax interpolation inside the force:

    ```python
    u = diffrax.LinearInterpolation(ts=control_times, ys=controls)  # (times, m)
    term = lagrax.LagrangianTerm(L, force=lambda t, q, qdot: B @ u.evaluate(t))
    ```

    Built inside a function that is differentiated, the term passes gradients to
    `u`'s samples through the closure (or hold them in an `eqx.Module` force). A
    `diffrax.MultiTerm(LagrangianTerm(L), ODETerm(f))` also works with
    Diffrax's own solvers: it adds `f(t, (q, q̇), args)`, a pair of rates of `q` and
    `q̇` (an acceleration, not a force), to the motion. lagrax's solvers take a
    single term and refuse a `MultiTerm`.

    !!! warning "Gradients through `diffrax.diffeqsolve` with fixed steps"

        Diffrax's default adjoint, `RecursiveCheckpointAdjoint()`, gives silently
        wrong gradients (5–13% off in our measurements, float32 and float64) when
        fixed steps (every lagrax solver, or `ConstantStepSize`) meet
        `SaveAt(ts=...)` times that fall on the step grid and there are fewer
        checkpoints than steps: the backward pass recomputes a step's end time
        one ulp away from the forward pass's and drops that save's gradient. Pass
        `adjoint=diffrax.RecursiveCheckpointAdjoint(checkpoints=max_steps)` (or
        `diffrax.DirectAdjoint()`, or with a symmetric lagrax solver
        `lagrax.ReversibleAdjoint()`) when you differentiate such a solve.
        `lagrax.simulate`, `lagrax.rollout` and the losses do this by default.
    """

    lagrangian: LagrangianLike
    force: ForceFn | None = None
    throw: bool = eqx.field(default=True, static=True)
    constraint: ConstraintFn | None = None

    def __check_init__(self):
        if not callable(self.lagrangian):
            raise TypeError(
                f"`lagrangian` must be a callable (q, qdot) -> scalar, got "
                f"{type(self.lagrangian).__name__}."
            )
        _check_force(self.force)
        if not isinstance(self.throw, bool):
            raise TypeError(f"`throw` must be a bool, got {self.throw!r}.")
        if self.constraint is not None and not callable(self.constraint):
            raise TypeError(
                "`constraint` must be a function q -> g(q) or None, got "
                f"{type(self.constraint).__name__}."
            )

    def dynamics(
        self, t, q: Position, qdot: Velocity
    ) -> tuple[Velocity, Acceleration, Bool[Array, ""]]:
        force = None if self.force is None else self.force(t, q, qdot)
        if self.constraint is not None:
            qddot, _, singular = checked_constrained_acceleration(
                self.lagrangian, q, qdot, force, self.constraint, throw=self.throw
            )
            return qdot, qddot, singular
        qddot, singular = checked_acceleration(
            self.lagrangian, q, qdot, force, throw=self.throw
        )
        return qdot, qddot, singular


LagrangianTerm.__init__.__doc__ = """**Arguments:**

- `lagrangian`: a callable `(q, qdot) -> scalar` for one state, such as an
    `AbstractLagrangian`.
- `force`: an optional generalized (non-conservative) force, a callable
    `(t, q, qdot) -> Q` with `Q` of shape `(dof,)`.
- `throw`: whether a singular mass matrix raises (default) or gives a NaN
    acceleration.
- `constraint`: an optional holonomic constraint `q -> g(q)` of shape `(m,)`: the
    vector field is then the index-1 constrained motion of
    `lagrax.acceleration(..., constraint=)`, which keeps `d²g/dt² = 0` but not
    `g = 0` itself: a Diffrax solver drifts off the constraints as its error
    accumulates (measured in `tests/test_constraints.py`; project with
    `lagrax.project_on_constraint`). `lagrax.Rattle`, `lagrax.VariationalMidpoint`
    and `lagrax.GaussLegendre` (and `Yoshida4` over them) keep the constraints
    exactly; `VelocityVerlet` refuses a constrained term.
"""


class DynamicsTerm(AbstractSecondOrderTerm):
    """The ODE `(q, q̇)' = (velocity, q̈)` of an `AbstractDynamics` model (a baseline
    such as `NeuralODEBaseline` or `HamiltonianNN`), as a Diffrax term.

    Integrate it with any Diffrax ODE solver or with `lagrax.VelocityVerlet`; the
    variational solvers need a Lagrangian (`LagrangianTerm`).

    A `force` adds to the acceleration directly, `q̈ = a(q, q̇) + Q(t, q, q̇)`: a
    black-box model has no mass matrix, so a force is an acceleration in its units
    (an `Actuation` with a learned `matrix` learns the input's effect).
    """

    model: AbstractDynamics
    force: ForceFn | None = None

    def __check_init__(self):
        if not isinstance(self.model, AbstractDynamics):
            raise TypeError(
                "`model` must be a lagrax.AbstractDynamics (for a Lagrangian use "
                f"lagrax.LagrangianTerm), got {type(self.model).__name__}."
            )
        _check_force(self.force)

    def dynamics(
        self, t, q: Position, qdot: Velocity
    ) -> tuple[Velocity, Acceleration, Bool[Array, ""]]:
        velocity = self.model.velocity(q, qdot)
        qddot = self.model.acceleration(q, qdot)
        if self.force is not None:
            qddot = qddot + self.force(t, q, qdot)
        return velocity, qddot, jnp.array(False)


DynamicsTerm.__init__.__doc__ = """**Arguments:**

- `model`: an `AbstractDynamics`.
- `force`: an optional force `(t, q, qdot) -> Q`, added to `q̈`.
"""


def _check_force(force) -> None:
    if force is not None and not callable(force):
        raise TypeError(
            f"`force` must be a callable (t, q, qdot) -> Q or None, got "
            f"{type(force).__name__}."
        )


def is_dynamics(model) -> bool:
    """Whether `model` predicts `q̈` itself (an `AbstractDynamics`) rather than being
    a Lagrangian; raises a clear error if it is neither."""
    if isinstance(model, AbstractDynamics):
        return True
    if callable(model):
        return False
    raise TypeError(
        "`model` must be a Lagrangian (a callable (q, qdot) -> scalar) or a "
        f"lagrax.AbstractDynamics, got {type(model).__name__}."
    )


def as_term(
    model,
    *,
    throw: bool,
    force: ForceFn | None = None,
    constraint: ConstraintFn | None = None,
) -> AbstractSecondOrderTerm:
    """The term of a Lagrangian (`LagrangianTerm(model, force, throw=throw,
    constraint=constraint)`) or of an `AbstractDynamics` (`DynamicsTerm(model,
    force)`, which takes no constraint: it has no mass matrix to balance one)."""
    if is_dynamics(model):
        if constraint is not None:
            raise TypeError(
                "`constraint` needs a Lagrangian (its mass matrix balances the "
                f"constraint forces); got a {type(model).__name__}."
            )
        return DynamicsTerm(model, force)
    return LagrangianTerm(model, force, throw=throw, constraint=constraint)


def model_dynamics(model, q: Position, qdot: Velocity) -> tuple[Velocity, Acceleration]:
    """`(velocity, q̈)` of a model at one state, for training and evaluation: a
    Lagrangian's singular mass matrix gives an explicit NaN (value and gradient)
    instead of an error, so that a training loop can skip (and count) that step."""
    velocity, qddot, _ = as_term(model, throw=False).dynamics(None, q, qdot)
    return velocity, qddot
