"""Many independent solves as one: the engine of the rollout losses' gradients."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, PyTree

from .._force import with_input


class BatchTerm(diffrax.AbstractTerm):
    """A batch of independent trajectories as one term: the state `(q, qdot)` has
    a leading batch axis, and the vector field is `term`'s at each state.

    Why not `jax.vmap` around `diffeqsolve`: differentiated, a vmapped solve's
    backward loop carries the cotangent of the model's parameters once per
    trajectory (a `batch × parameters` array, updated at every stage of every step)
    and sums it at the end. In one solve of the batch the parameters' cotangent is
    one array, and each stage's backward pass sums over the trajectories inside
    its matrix products, as a batched loss does.

    The trajectories share the solve's steps. With fixed steps each trajectory
    computes exactly what its own solve would. An adaptive controller must accept a
    step for all of them (`batch_norm` makes its error norm the largest over the
    trajectories, so each one meets the tolerance it would meet alone, taking at
    least as many steps). A failed step fails the batch: right for a loss, which a
    failed trajectory spoils anyway, not for evaluating rollouts one by one.

    Diffrax's solvers integrate this term as they would any; a lagrax solver, which
    reads the Lagrangian from its term, integrates it inside `Batched`.

    **Arguments:**

    - `term`: the term of one trajectory.
    - `inputs`: per-trajectory input paths (a Diffrax path whose arrays have a
        leading batch axis) that drive the `lagrax.Actuation`s of `term`, or `None`.
    """

    term: diffrax.AbstractTerm
    inputs: diffrax.AbstractPath | None = None

    def trajectory(self, inputs) -> diffrax.AbstractTerm:
        """The term of one trajectory, driven by its `inputs`."""
        return self.term if inputs is None else with_input(self.term, inputs)

    def vf(self, t, y, args):
        return jax.vmap(lambda y, u: self.trajectory(u).vf(t, y, args))(y, self.inputs)

    def contr(self, t0, t1, **kwargs):
        return self.term.contr(t0, t1, **kwargs)

    def prod(self, vf, control):
        return jax.vmap(lambda vf: self.term.prod(vf, control))(vf)


class Batched(diffrax.AbstractWrappedSolver):
    """A solver of one trajectory stepping a `BatchTerm`: each step is `solver`'s
    step of every trajectory (`jax.vmap`) under that trajectory's term, and the
    batch's result is its first failure.

    For the lagrax solvers, whose steps read the Lagrangian from their term. (A
    Diffrax solver steps a `BatchTerm` itself, faster: vmapped, its stage loop
    would carry a parameter cotangent per trajectory again.)

    **Arguments:**

    - `solver`: the solver of one trajectory.
    """

    solver: diffrax.AbstractSolver

    @property
    def term_structure(self):
        return BatchTerm

    @property
    def term_compatible_contr_kwargs(self):
        return self.solver.term_compatible_contr_kwargs

    @property
    def interpolation_cls(self):  # pyright: ignore[reportIncompatibleMethodOverride]
        one = self.solver.interpolation_cls

        def interpolation(*, t0, t1, **dense_info):
            batch = jax.vmap(lambda info: one(t0=t0, t1=t1, **info))(dense_info)
            return _BatchedInterpolation(t0, t1, batch)

        return interpolation

    def order(self, terms):
        return self.solver.order(terms)

    def error_order(self, terms):
        return self.solver.error_order(terms)

    def init(self, terms, t0, t1, y0, args):
        def one(y, inputs):
            return self.solver.init(_trajectory(terms, inputs), t0, t1, y, args)

        return jax.vmap(one)(y0, _inputs(terms))

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        def one(y, state, inputs):
            return self.solver.step(
                _trajectory(terms, inputs), t0, t1, y, args, state, made_jump
            )

        y1, y_error, dense_info, solver_state, results = jax.vmap(one)(
            y0, solver_state, _inputs(terms)
        )
        return y1, y_error, dense_info, solver_state, _first_failure(results)

    def func(self, terms, t0, y0, args):
        def one(y, inputs):
            return self.solver.func(_trajectory(terms, inputs), t0, y, args)

        return jax.vmap(one)(y0, _inputs(terms))


def _is_batch_term(x) -> bool:
    return isinstance(x, BatchTerm)


def _inputs(terms):
    """The per-trajectory inputs of the `BatchTerm` inside `terms` (which Diffrax
    has wrapped)."""
    [term] = [
        x for x in jax.tree.leaves(terms, is_leaf=_is_batch_term) if _is_batch_term(x)
    ]
    return term.inputs


def _trajectory(terms, inputs):
    """`terms` with its `BatchTerm` replaced by the term of one trajectory."""
    return jax.tree.map(
        lambda x: x.trajectory(inputs) if _is_batch_term(x) else x,
        terms,
        is_leaf=_is_batch_term,
    )


class _BatchedInterpolation(diffrax.AbstractLocalInterpolation):
    """One step's dense output of every trajectory of a `Batched` solve."""

    t0: Array
    t1: Array
    batch: diffrax.AbstractLocalInterpolation  # arrays with a leading batch axis

    def evaluate(self, t0, t1=None, left: bool = True) -> PyTree[Array]:
        return jax.vmap(lambda one: one.evaluate(t0, t1, left))(self.batch)


def _first_failure(results: diffrax.RESULTS) -> diffrax.RESULTS:
    """The result of the batch: the first trajectory's failure, else `successful`."""
    failed = results != diffrax.RESULTS.successful
    first = jnp.argmax(failed)
    return jax.tree.map(lambda code: code[first], results)


def batch_norm(controller: diffrax.AbstractStepSizeController):
    """`controller` for a `BatchTerm`: a `PIDController` whose error norm is the
    largest of its norms of the trajectories' errors, so that every trajectory
    meets the tolerance. Other controllers (fixed steps) are returned as they are;
    a different adaptive controller is refused."""
    if isinstance(controller, diffrax.PIDController):
        norm = controller.norm
        return eqx.tree_at(
            lambda c: c.norm, controller, lambda error: jnp.max(jax.vmap(norm)(error))
        )
    if isinstance(controller, diffrax.AbstractAdaptiveStepSizeController):
        raise TypeError(
            "A batch of solves shares its adaptive steps through a "
            f"diffrax.PIDController; got a {type(controller).__name__}."
        )
    return controller
