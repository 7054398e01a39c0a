"""One seam between models and everything that trains or integrates them.

A model is either a Lagrangian (any callable `L(q, q̇)`, usually an
`AbstractLagrangian`) or an `AbstractDynamics` baseline that predicts `q̈` itself.
Losses, rollouts and metrics ask for `q̈` only through `model_acceleration`, and
integrate only through `DynamicsTerm`.
"""

import diffrax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, Float, PyTree

from .._baselines import AbstractDynamics
from .._mechanics import acceleration
from .._simulate import LagrangianTerm


def check_model(model) -> None:
    """Raise a clear error unless `model` is a Lagrangian or an `AbstractDynamics`."""
    if not (isinstance(model, AbstractDynamics) or callable(model)):
        raise TypeError(
            "`model` must be a Lagrangian (a callable (q, qdot) -> scalar) or a "
            f"lagrax.AbstractDynamics, got {type(model).__name__}."
        )


def model_acceleration(
    model, q: Float[Array, " dof"], qdot: Float[Array, " dof"]
) -> Float[Array, " dof"]:
    """`q̈` predicted by a Lagrangian or an `AbstractDynamics` at one state.

    For a Lagrangian this is `lagrax.acceleration(model, q, qdot, throw=False)`: a
    singular mass matrix gives an explicit NaN instead of an error, so that a
    training loop can skip (and count) that step rather than stop.
    """
    check_model(model)
    if isinstance(model, AbstractDynamics):
        return model.acceleration(q, qdot)
    return acceleration(model, q, qdot, throw=False)


def model_velocity(
    model, q: Float[Array, " dof"], qdot: Float[Array, " dof"]
) -> Float[Array, " dof"]:
    """`q̇` as the model's equations give it: `qdot` itself for a Lagrangian, the
    model's `velocity` for an `AbstractDynamics` (e.g. a Hamiltonian's ∂H/∂p)."""
    check_model(model)
    if isinstance(model, AbstractDynamics):
        return model.velocity(q, qdot)
    return qdot


class DynamicsTerm(diffrax.AbstractTerm):
    """The ODE `(q, q̇)' = (velocity, q̈)` of any model, as a Diffrax term.

    Like `lagrax.LagrangianTerm` but for training: `q̈` comes from
    `model_acceleration`, so a singular mass matrix gives NaN (which the loss
    reports and `fit` skips) instead of raising mid-solve. For a Lagrangian it also
    carries the `LagrangianTerm`, which the variational lagrax solvers look for to
    read the Lagrangian itself.
    """

    model: PyTree
    lagrangian_term: LagrangianTerm | None

    def __init__(self, model):
        check_model(model)
        self.model = model
        self.lagrangian_term = (
            None if isinstance(model, AbstractDynamics) else LagrangianTerm(model)
        )

    def vf(self, t, y, args):
        q, qdot = y
        return model_velocity(self.model, q, qdot), model_acceleration(
            self.model, q, qdot
        )

    def contr(self, t0, t1, **kwargs):
        return t1 - t0

    def prod(self, vf, control):
        return jtu.tree_map(lambda v: jnp.asarray(control, v.dtype) * v, vf)
