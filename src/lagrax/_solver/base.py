from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import MassMatrix
from .._graph import BlockSparseMatrix, Graph, sparse_jacobian
from .._graph_lagrangian import AbstractGraphLagrangian
from .._lagrangian import gradient_of, jet_of
from .._linalg import inverse
from .._misc import check_real
from .._term import AbstractSecondOrderTerm, LagrangianTerm


class AbstractSymmetricSolver(diffrax.AbstractSolver):
    """A fixed-step lagrax solver whose one-step map is symmetric: a step from `t0`
    to `t1` followed by a step from `t1` back to `t0` returns the initial state.

    Symmetric methods have even order, and a symmetric composition (`Yoshida4`)
    raises their order by two. None provides an error estimate: they are meant for
    `diffrax.ConstantStepSize`, where they keep their geometric properties.

    Every step checks that it resolves the motion (`check_step`): a step that does
    not, or that meets a singular mass matrix, fails instead of returning garbage.

    !!! warning "Differentiating `diffrax.diffeqsolve` with these solvers"

        Fixed steps with `SaveAt(ts=...)` on the step grid and Diffrax's default
        adjoint give silently wrong gradients (see `lagrax.LagrangianTerm`): pass
        `adjoint=diffrax.RecursiveCheckpointAdjoint(checkpoints=max_steps)`.
        `lagrax.simulate` and `lagrax.rollout` do by default.
        `lagrax.ReversibleAdjoint()`, which runs these solvers backwards, is exact
        too, in memory independent of the number of steps.
    """


def unwrap(terms):
    """The user's term. `diffeqsolve` checks it against `term_structure`, then hands
    it to the solver wrapped (in Diffrax's private `WrapTerm`, as `.term`, to flip
    the time direction); a solver called directly gets it as it is."""
    if isinstance(terms, AbstractSecondOrderTerm):
        return terms
    return getattr(terms, "term", terms)


def check_unconstrained(terms, owner: str) -> None:
    """Refuse, at trace time, a term with a holonomic constraint in a solver that
    does not enforce it: integrating its index-1 field would drift off the
    constraints unseen."""
    term = unwrap(terms)
    if isinstance(term, LagrangianTerm) and term.constraint is not None:
        raise TypeError(
            f"{owner} does not take a constrained LagrangianTerm: use "
            "lagrax.Rattle(), lagrax.VariationalMidpoint() or lagrax.GaussLegendre(), "
            "which keep the constraints exactly, or a Diffrax solver such as "
            "diffrax.Tsit5 on the index-1 field, which drifts off them."
        )


def lagrangian_term(terms) -> LagrangianTerm:
    """The `LagrangianTerm` of a variational solver (its `term_structure`)."""
    term = unwrap(terms)
    assert isinstance(term, LagrangianTerm)  # checked by diffeqsolve
    return term


def time_direction(terms, t0, t1) -> tuple[Any, Array]:
    """`(h, direction)`: the signed physical step of `[t0, t1]` and the sign that
    maps solver times to physical times (`diffeqsolve` integrates in `τ = −t` when
    time runs backwards)."""
    control = terms.contr(t0, t1)
    return control, jnp.sign(control) * jnp.sign(t1 - t0)


def forces(
    term: LagrangianTerm, t, q: Float[Array, " dof"], qdot: Float[Array, " dof"]
) -> tuple[Float[Array, " dof"], Float[Array, " dof"]]:
    """`(F, p)` at one state, what the discrete Euler–Lagrange equations are made
    of: the force `F = ∂L/∂q + Q` (with the term's generalized force `Q`, if any)
    and the momentum `p = ∂L/∂q̇`."""
    dl_dq, dl_dqdot = gradient_of(term.lagrangian, q, qdot)
    if term.force is not None:
        dl_dq = dl_dq + term.force(t, q, qdot)
    return dl_dq, dl_dqdot


def linearized_forces(
    term: LagrangianTerm, t, q: Float[Array, " dof"], qdot: Float[Array, " dof"]
) -> tuple[tuple[Array, Array], tuple[tuple[Array, Array], tuple[Array, Array]]]:
    """`forces` and their Jacobian: `((F, p), ((∂F/∂q, ∂F/∂q̇), (∂p/∂q, ∂p/∂q̇)))`,
    four `dof × dof` blocks from one `jet` of `L` along all `2·dof` input directions
    (for an `MLPLagrangian` about the cost of its gradient; forward-over-reverse
    autodiff for other Lagrangians), plus forward-mode autodiff of `Q`."""
    n = q.shape[0]
    grad, hessian = jet_of(term.lagrangian, q, qdot, jnp.eye(2 * n, dtype=q.dtype))
    force, momentum = grad[:n], grad[n:]
    force_q, force_qdot = hessian[:n, :n], hessian[:n, n:]
    force_fn = term.force
    if force_fn is not None:

        def applied(q, qdot):
            value = force_fn(t, q, qdot)
            return value, value

        (extra_q, extra_qdot), extra = jax.jacfwd(
            applied, argnums=(0, 1), has_aux=True
        )(q, qdot)
        force, force_q, force_qdot = (
            force + extra,
            force_q + extra_q,
            force_qdot + extra_qdot,
        )
    momentum_q, momentum_qdot = hessian[n:, :n], hessian[n:, n:]
    return (force, momentum), ((force_q, force_qdot), (momentum_q, momentum_qdot))


def first_failure(*results: diffrax.RESULTS) -> diffrax.RESULTS:
    """The first unsuccessful result code of several, else `successful`."""
    out = results[-1]
    for result in reversed(results[:-1]):
        out = diffrax.RESULTS.where(result == diffrax.RESULTS.successful, out, result)
    return out


def check_step(y0, y1, h, accelerations=None) -> diffrax.RESULTS:
    """Whether a step of size `h` from `y0` to `y1` resolves the motion.

    Any smooth motion satisfies `q₁ − q₀ = h (q̇₀ + q̇₁)/2 + O(h³)`, with a defect
    of about `(hω)²/12` relative to the speed for an oscillation of frequency `ω`.
    A step whose defect exceeds the largest of `|q̇₀|`, `|q̇₁|` and `|q₁ − q₀|/h`
    (max norms) did not follow the motion at all, and at such steps the implicit
    solvers' equations have spurious roots. With the `accelerations` `(q̈₀, q̈₁)` at
    the step's ends (an explicit method's), the stiffness along the step,
    `ω² ≈ |q̈₁ − q̈₀| / |q₁ − q₀|`, is also held to `hω < 2`: the exact stability
    limit of `VelocityVerlet` on a linear oscillator, past which it blows up.

    An unresolved step fails with `nonlinear_divergence`
    (`lagrax.RESULTS.step_too_large`), a non-finite one with `nonfinite`. Costs no
    evaluation of the Lagrangian.
    """
    (q0, v0), (q1, v1) = y0, y1
    dq = q1 - q0
    u = dq / h
    defect = jnp.max(jnp.abs(u - 0.5 * (v0 + v1)))
    scale = jnp.maximum(jnp.max(jnp.abs(u)), jnp.max(jnp.abs(jnp.stack([v0, v1]))))
    unresolved = defect > scale
    if accelerations is not None:
        a0, a1 = accelerations
        # h²ω² > 4, written without dividing by |q₁ − q₀|, which may vanish.
        unresolved = unresolved | (
            h**2 * jnp.max(jnp.abs(a1 - a0)) > 4 * jnp.max(jnp.abs(dq))
        )
    finite = jnp.all(jnp.isfinite(q1)) & jnp.all(jnp.isfinite(v1))
    # The pyright ignores in this file: Equinox types a member that `diffrax.RESULTS`
    # inherits (from Optimistix or Lineax) as its base class's; it is Diffrax's.
    return diffrax.RESULTS.where(
        finite,
        diffrax.RESULTS.where(
            unresolved,
            diffrax.RESULTS.nonlinear_divergence,  # pyright: ignore[reportArgumentType]
            diffrax.RESULTS.successful,
        ),
        diffrax.RESULTS.nonfinite,  # pyright: ignore[reportArgumentType]
    )


# Newton's outcomes, carried as floats through `custom_root` (see below).
_CONVERGED, _NOT_CONVERGED, _SINGULAR = 0.0, 1.0, 2.0


class GraphPattern(NamedTuple):
    """The sparsity of a Newton system on a graph: unknowns of shape
    `(stages, num_nodes · node_dim)` whose residual at node `i` depends only on the
    unknowns of node `i` and its neighbours."""

    graph: Graph
    node_dim: int
    stages: int = 1

    def to_node_major(self, x: Float[Array, " n"]) -> Float[Array, " n"]:
        shape = (self.stages, self.graph.num_nodes, self.node_dim)
        return x.reshape(shape).transpose(1, 0, 2).reshape(-1)

    def from_node_major(self, x: Float[Array, " n"]) -> Float[Array, " n"]:
        shape = (self.graph.num_nodes, self.stages, self.node_dim)
        return x.reshape(shape).transpose(1, 0, 2).reshape(-1)

    @property
    def block(self) -> int:
        return self.stages * self.node_dim


def pattern_of(
    lagrangian, stages: int = 1, *, velocity: bool = False
) -> GraphPattern | None:
    """The `GraphPattern` of a graph Lagrangian's Newton systems, else `None`:
    on its `graph`, or for the velocity solve (whose Jacobian is the mass matrix)
    on its `mass_graph`."""
    if isinstance(lagrangian, AbstractGraphLagrangian):
        graph = lagrangian.mass_graph if velocity else lagrangian.graph
        return GraphPattern(graph, lagrangian.node_dim, stages)
    return None


Jacobian = Float[Array, "n n"] | BlockSparseMatrix


def newton_root(
    residual,
    guess: Float[Array, " n"],
    *,
    rtol: float,
    atol: float,
    max_steps: int,
    pattern: GraphPattern | None = None,
    linearize=None,
) -> tuple[Float[Array, " n"], diffrax.RESULTS, Jacobian, Jacobian]:
    """Solve `residual(x) = 0` near `guess`; returns `(x, result, J, J⁻¹)` with `J`
    the Jacobian at `guess` (for `check_stiffness`).

    The forward solve is a chord (simplified Newton) iteration: the Jacobian is
    formed and inverted at the guess and reused, so each iteration costs one residual
    evaluation and a matrix-vector product. With the predictors of the variational
    solvers (error O(h³)) it converges in two to four iterations. Should an update
    shrink by less than a factor of four (a coarse step, a poor guess), or the
    contraction forecast that the budget of `max_steps` will not reach the tolerance
    (Hairer & Wanner's test in RADAU5), the Jacobian is formed and inverted again at
    each iterate from then on, which turns the slow linear convergence into
    Newton's. Forming a Jacobian also gives the residual at the same point, so the
    iteration that follows it costs no further evaluation.

    `linearize`, optional, is `x -> (residual(x), J(x))` computed more cheaply than
    by autodiff (the variational solvers assemble `J` from the Lagrangian's own
    `jet`); by default, and always with a `pattern`, `J` comes from forward-mode
    autodiff of `residual`. The explicit inverse (`lagrax._linalg.inverse`) is on
    purpose: the systems here have a few unknowns, where a LAPACK triangular solve
    costs far more in call overhead than in arithmetic, and the Jacobian only sets
    the contraction rate, never the root.

    It stops when the update is below `atol + rtol·|x|` (max norm) or when the
    contraction observed over the last two updates bounds the remaining error by
    that tolerance (Hairer & Wanner's criterion, which saves the last, confirming
    iteration): `successful`. A Jacobian that is singular by the criterion of
    `lagrax.acceleration` stops it with `singular`; `max_steps` iterations without
    convergence, or a non-finite iterate, with `nonlinear_max_steps_reached`.

    Derivatives do not go through the iterations: `jax.lax.custom_root` applies the
    implicit function theorem with the exact Jacobian at the solution, so gradients
    are exact however many iterations ran.

    With a `pattern` (a graph Lagrangian's system) `J` is a `BlockSparseMatrix`
    from `pattern.graph`'s colouring, each linear solve is its
    `BlockSparseMatrix.solve` (a failed one counts as a singular Jacobian), and the
    second returned matrix is `J` itself: no inverse is formed. The unknowns and the
    residual keep their layout; the blocks are node-major.
    """
    options = dict(rtol=rtol, atol=atol, max_steps=max_steps)
    if pattern is None:
        if linearize is None:
            return _newton(residual, guess, _dense_factor, _dense_apply, **options)

        def factor(f, x):
            value, jac = linearize(x)
            return (value, jac, *inverse(jac))

        return _newton(
            residual,
            guess,
            factor,
            _dense_apply,
            tangent_factor=_dense_factor,
            **options,
        )

    def sparse_factor(f, x):
        value, jac = sparse_jacobian(f, x, pattern.graph, pattern.block)
        return value, jac, jac, jnp.array(False)

    x, result, jac0, _ = _newton(
        lambda x: pattern.to_node_major(residual(pattern.from_node_major(x))),
        pattern.to_node_major(guess),
        sparse_factor,
        _sparse_apply,
        **options,
    )
    return pattern.from_node_major(x), result, jac0, jac0


def _dense_factor(f, x):
    # Forward mode over the unit vectors, with the value computed once beside.
    eye = jnp.eye(x.shape[0], dtype=x.dtype)
    value, columns = jax.vmap(lambda u: jax.jvp(f, (x,), (u,)), out_axes=(None, -1))(
        eye
    )
    return (value, columns, *inverse(columns))


def _dense_apply(jac_inv, r):
    return jac_inv @ r, jnp.array(False)


def _sparse_apply(jac, r):
    return jac.solve(r)


def _newton(
    residual, guess, factor, apply, *, rtol, atol, max_steps, tangent_factor=None
):
    """`newton_root` with the linearization `factor(f, x) -> (f(x), J, F, singular)`
    and `apply(F, r) -> (J⁻¹r, failed)`; `tangent_factor` (default `factor`)
    linearizes the linear maps of the implicit function theorem."""

    def solve(f, x0):
        r0, jac0, jac0_inv, singular0 = factor(f, x0)

        tol = atol + rtol * jnp.max(jnp.abs(x0))

        def converged(size, prev_size, step):
            # Hairer & Wanner's test: with the contraction θ observed over the last
            # two updates, the error left after this one is at most θ/(1 − θ)·|dx|.
            theta = size / prev_size
            estimate = theta / (1 - theta) * size
            return (size <= tol) | ((step >= 2) & (theta < 1) & (estimate <= tol))

        def going(carry):
            x, _, singular, size, prev_size, step = carry
            return (
                (step < max_steps)
                & ~singular
                & ~converged(size, prev_size, step)
                & jnp.all(jnp.isfinite(x))
            )

        def update(x, r, jac_inv, singular, size, step):
            dx, failed = apply(jac_inv, r)
            singular = singular | failed
            return x - dx, jac_inv, singular, jnp.max(jnp.abs(dx)), size, step + 1

        # Chord iterations while they contract well and can converge within the
        # budget; then, if needed, Newton with a fresh Jacobian each iteration. Two
        # loops rather than a branch per iteration: the second costs nothing when
        # the first converged.
        def chord_going(carry):
            size, prev_size, step = carry[3], carry[4], carry[5]
            theta = size / prev_size
            # Hairer & Wanner's forecast (RADAU5): at this contraction, the error
            # left when the budget runs out; a slow chord hands over to Newton now
            # instead of spending the budget first.
            left = theta ** (max_steps - step) / (1 - theta) * size
            return going(carry) & (theta <= 0.25) & ~((step >= 2) & (left > tol))

        def chord(carry):
            x, jac_inv, singular, size, _, step = carry
            return update(x, f(x), jac_inv, singular, size, step)

        def newton(carry):
            x, _, singular, size, _, step = carry
            r, _, jac_inv, now_singular = factor(f, x)
            return update(x, r, jac_inv, singular | now_singular, size, step)

        # The first iteration, with the residual that came with the Jacobian (a
        # non-finite guess, such as a failed step's state, makes it the last).
        inf = jnp.array(jnp.inf, x0.dtype)
        carry = update(x0, r0, jac0_inv, singular0, inf, jnp.array(0))
        carry = jax.lax.while_loop(chord_going, chord, carry)
        carry = jax.lax.while_loop(going, newton, carry)
        x, _, singular, size, prev_size, step = carry
        ok = converged(size, prev_size, step) & jnp.all(jnp.isfinite(x))
        status = jnp.where(
            singular, _SINGULAR, jnp.where(ok, _CONVERGED, _NOT_CONVERGED)
        )
        # custom_root gives its auxiliary output a tangent of the output's dtype,
        # which an integer cannot have: pass the status as a float.
        return x, (status.astype(x.dtype), jac0, jac0_inv)

    def tangent_solve(g, y):
        # g is linear: its Jacobian anywhere is the one at the solution.
        _, _, jac_inv, _ = (tangent_factor or factor)(g, y)
        return apply(jac_inv, y)[0]

    x, aux = jax.lax.custom_root(residual, guess, solve, tangent_solve, has_aux=True)
    status, jac0, jac0_inv = jax.lax.stop_gradient(aux)
    result = diffrax.RESULTS.where(
        status == _CONVERGED,
        diffrax.RESULTS.successful,
        diffrax.RESULTS.where(
            status == _SINGULAR,
            diffrax.RESULTS.singular,  # pyright: ignore[reportArgumentType]
            diffrax.RESULTS.nonlinear_max_steps_reached,  # pyright: ignore[reportArgumentType]
        ),
    )
    return x, result, jac0, jac0_inv


# Past this, a step's implicit equations are ruled by the potential's curvature
# rather than by inertia: hω > π, fewer than two steps per period of the fastest
# oscillation, where no discretization can follow the motion.
_MAX_STIFFNESS = (jnp.pi / 2) ** 2


def check_stiffness(
    scaled_jacobian: Float[Array, "n n"] | BlockSparseMatrix,
    mass: tuple[MassMatrix | BlockSparseMatrix, MassMatrix | BlockSparseMatrix],
    stages: int = 1,
) -> diffrax.RESULTS:
    """Whether an implicit step resolves the fastest oscillation of the motion.

    `scaled_jacobian` is `h` times the Jacobian of the step's equations in the
    velocities (or velocity-like unknowns, `stages` of them per coordinate), which
    is the mass matrix `H` (blockwise, per stage) plus `O(h)` gyroscopic and
    `−(h²/4)·∂²L/∂q²`-like terms; `mass` is `(H, H⁻¹)` as the velocity solve
    returns it. `‖H⁻¹·hJ − I‖∞ ≈ (hω)²/4` for the fastest frequency `ω` of the
    linearized motion: above `(π/2)²` the step fails with `nonlinear_divergence`
    (`lagrax.RESULTS.step_too_large`).

    For a graph Lagrangian (block-sparse matrices) `H⁻¹` is replaced by the inverse
    of its diagonal blocks, exact when `H` is block diagonal (as for the systems
    with a diagonal kinetic energy) and an estimate otherwise; the cost is linear.
    """
    if isinstance(scaled_jacobian, BlockSparseMatrix):
        assert isinstance(mass[0], BlockSparseMatrix)  # a graph Lagrangian's
        deviation = _graph_deviation(scaled_jacobian, mass[0], stages)
    else:
        mass_inverse = mass[1]
        assert not isinstance(mass_inverse, BlockSparseMatrix)  # dense, as the step
        if stages > 1:
            eye = jnp.eye(stages, dtype=mass_inverse.dtype)
            mass_inverse = jnp.kron(eye, mass_inverse)
        eye = jnp.eye(scaled_jacobian.shape[0], dtype=scaled_jacobian.dtype)
        deviation = jnp.max(
            jnp.sum(jnp.abs(mass_inverse @ scaled_jacobian - eye), axis=1)
        )
    return diffrax.RESULTS.where(
        deviation > _MAX_STIFFNESS,
        diffrax.RESULTS.nonlinear_divergence,  # pyright: ignore[reportArgumentType]
        diffrax.RESULTS.successful,
    )


def _graph_deviation(
    jacobian: BlockSparseMatrix, mass: BlockSparseMatrix, stages: int
) -> Float[Array, ""]:
    """`‖D⁻¹ (hJ − I_s ⊗ H)‖∞` with `D` the diagonal blocks of `I_s ⊗ H`, from the
    blocks alone. `H` is on `J`'s graph or block diagonal (its `mass_graph`)."""
    eye = jnp.eye(stages, dtype=mass.diagonal.dtype)
    per_stage = jax.vmap(lambda block: jnp.kron(eye, block))
    pre = per_stage(jax.vmap(inverse)(mass.diagonal)[0])
    i, j = jacobian.graph.pairs
    if mass.graph == jacobian.graph:
        mass_upper, mass_lower = per_stage(mass.upper), per_stage(mass.lower)
    else:
        assert mass.graph.pairs[0].size == 0, "H on neither J's graph nor diagonal"
        mass_upper = mass_lower = jnp.zeros_like(jacobian.upper)

    def row_sums(pre, blocks):
        return jnp.sum(jnp.abs(pre @ blocks), axis=-1)

    rows = row_sums(pre, jacobian.diagonal - per_stage(mass.diagonal))
    rows = rows.at[i].add(row_sums(pre[i], jacobian.upper - mass_upper))
    rows = rows.at[j].add(row_sums(pre[j], jacobian.lower - mass_lower))
    return jnp.max(rows)


class AbstractNewtonSolver(AbstractSymmetricSolver):
    """A symmetric lagrax solver of a `lagrax.LagrangianTerm` whose steps solve
    equations by `newton_root`: its Newton tolerances and budget, checked when it
    is built. Dense output is linear."""

    rtol: eqx.AbstractVar[float | None]
    atol: eqx.AbstractVar[float | None]
    max_steps: eqx.AbstractVar[int]

    term_structure: ClassVar = LagrangianTerm
    interpolation_cls: ClassVar[Callable[..., diffrax.LocalLinearInterpolation]] = (
        diffrax.LocalLinearInterpolation
    )

    def __check_init__(self):
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int):
            raise TypeError(f"`max_steps` must be an int, got {self.max_steps!r}.")
        if self.max_steps < 1:
            raise ValueError(f"`max_steps` must be at least 1, got {self.max_steps}.")
        for name in ("rtol", "atol"):
            value = getattr(self, name)
            if value is not None and not check_real(value, name) > 0:
                raise ValueError(f"`{name}` must be positive or None, got {value!r}.")

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)

    def newton_options(self, dtype) -> dict:
        """The Newton tolerances (default: 64 ulps of `dtype`) and budget."""
        ulps = 64 * float(jnp.finfo(dtype).eps)
        return dict(
            rtol=ulps if self.rtol is None else self.rtol,
            atol=ulps if self.atol is None else self.atol,
            max_steps=self.max_steps,
        )


class AbstractVariationalSolver(AbstractNewtonSolver):
    """A variational integrator: it steps the discrete Euler–Lagrange equations of a
    `lagrax.LagrangianTerm` in position–momentum form, with Newton solves, and
    carries the discrete momentum `p` in its state.

    Shared here: the velocity solve `p₁ = ∂L/∂q̇(q₁, q̇₁)` that closes every step,
    and how a step's failures are reported.
    """

    def velocity(
        self, lagrangian, q1, p1, guess
    ) -> tuple[Float[Array, " dof"], diffrax.RESULTS, tuple[Jacobian, Jacobian]]:
        """`q̇₁` from `p₁ = ∂L/∂q̇(q₁, q̇₁)`, by Newton from `guess`; returns
        `(q̇₁, result, (H, H⁻¹))` for `check_stiffness` (for a graph Lagrangian
        both are the block-sparse `H`). Its Jacobian is the mass matrix `H` (at the
        guess), so a singular one is reported as such; for an `L` quadratic in `q̇`
        the solve is linear: one jet along the velocity directions, then one
        gradient to confirm."""
        n = q1.shape[0]
        # The velocity directions: the jet's Hessian block is then H itself.
        directions = jnp.concatenate([jnp.zeros((n, n)), jnp.eye(n)]).astype(q1.dtype)

        def linearize(v):
            grad, mass = jet_of(lagrangian, q1, v, directions)
            return grad[n:] - p1, mass

        v1, result, mass, mass_inverse = newton_root(
            lambda v: gradient_of(lagrangian, q1, v)[1] - p1,
            guess,
            linearize=linearize,
            pattern=pattern_of(lagrangian, velocity=True),
            **self.newton_options(q1.dtype),
        )
        return v1, result, (mass, mass_inverse)

    def finish(
        self, y0, y1, h, *results: diffrax.RESULTS
    ) -> tuple[Any, diffrax.RESULTS]:
        """`(y₁, result)`: the step's result is its Newton solves' first failure,
        then `check_step`; a failed step's state is `inf`.

        Under `vmap` a solve that has failed keeps stepping, its results discarded,
        while the others go on. From the state it failed at, it would fail again at
        every step, each time spending the Newton budget with a fresh Jacobian per
        iteration (which the whole batch waits for: a failed rollout among 40
        made an evaluation six times slower). From an `inf` state its Newton
        solves stop at once. The samples of the failed step are `inf`, like those
        the solve never reaches."""
        result = first_failure(*results, check_step(y0, y1, h))
        failed = result != diffrax.RESULTS.successful
        return jax.tree.map(lambda y: jnp.where(failed, jnp.inf, y), y1), result
