"""lagrax's own linear solves against the same work through `lineax.linear_solve`.

For issue 33 item 5 ("the ecosystem's abstractions where they cost no speed"):
`BlockSparseMatrix` is a `lineax.AbstractLinearOperator` and `lagrax.PivotedLU` a
`lineax.AbstractLinearSolver`; this measures whether lagrax's internal solves should
go through Lineax. In one run, compile excluded, interleaved repeats, medians:

- `dense`: `_linalg.solve` (the pivoted elimination, differentiated by autodiff)
  against `lineax.linear_solve` with `lagrax.PivotedLU` (the same elimination,
  Lineax's implicit derivatives) and with `lineax.LU` (LAPACK), under `vmap` over
  1024 systems of 2, 4, 8 and 20 unknowns; forward and gradient.
- `accel`: `lagrax.acceleration` of an `MLPLagrangian` (dof 2 and 8, batch 512)
  with either dense solve; forward and the L1 loss's gradient.
- `graph`: `BlockSparseMatrix.solve` against `lineax.BiCGStab` with the same
  block-Jacobi preconditioner and starting guess (a spring lattice's midpoint
  Newton matrix), and against Lineax's default (`Tridiagonal`) on a scalar chain.

Run `python benchmarks/linear_solves.py [--repeats 20] [--part dense|accel|graph|all]`
(`--quick`: 3 repeats of the dense part, a smoke run).
"""

import argparse
import functools
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np

import lagrax
from lagrax import _graph, _linalg, _mechanics


try:
    from ._common import median, time_interleaved
except ImportError:  # run as a script
    from _common import median, time_interleaved


def report(title, samples, baseline):
    base = median(samples[baseline])
    print(f"## {title}")
    for name, times in samples.items():
        ratio = median(times) / base
        print(f"  {name:32s} {median(times) * 1e6:10.1f} us   x{ratio:5.2f}")
    sys.stdout.flush()


def report_both(title, forward, gradient, baseline, repeats):
    """`report` of the forward passes and of their gradients, each timed
    interleaved."""
    report(f"{title}, forward", time_interleaved(forward, repeats=repeats), baseline)
    report(f"{title}, gradient", time_interleaved(gradient, repeats=repeats), baseline)


def lineax_solve(h, rhs):
    """`_linalg.solve` through `lineax.linear_solve` with `PivotedLU`."""
    solution = lx.linear_solve(
        lx.MatrixLinearOperator(h), rhs, lagrax.PivotedLU(), throw=False
    )
    if h.shape[0] <= _linalg._UNROLLED_MAX_DOF:
        definite = _linalg._is_positive_definite(jax.lax.stop_gradient(h))
    else:
        definite = _linalg._looped_is_positive_definite(jax.lax.stop_gradient(h))
    return solution.value, definite, solution.result != lx.RESULTS.successful


def lineax_lu(h, rhs):
    solution = lx.linear_solve(lx.MatrixLinearOperator(h), rhs, lx.LU(), throw=False)
    return solution.value, jnp.array(True), solution.result != lx.RESULTS.successful


def dense(repeats):
    batch = 1024
    solves = {
        "lagrax solve": _linalg.solve,
        "lineax + PivotedLU": lineax_solve,
        "lineax LU (LAPACK)": lineax_lu,
    }
    for n in (2, 4, 8, 20):
        a = jax.random.normal(jax.random.key(n), (batch, n, n)) / n
        h = a @ jnp.swapaxes(a, -1, -2) + jnp.eye(n)
        rhs = jax.random.normal(jax.random.key(n + 1), (batch, n))
        forward, gradient = {}, {}
        for name, solve in solves.items():

            def solutions(h, rhs, solve=solve):
                return jax.vmap(lambda h, r: solve(h, r)[0])(h, rhs)

            def loss(h, rhs, solutions=solutions):
                return jnp.sum(solutions(h, rhs) ** 2)

            forward[name] = functools.partial(jax.jit(solutions), h, rhs)
            gradient[name] = functools.partial(
                jax.jit(jax.grad(loss, argnums=(0, 1))), h, rhs
            )
        title = f"dense n={n}, vmap over {batch}, float32"
        report_both(title, forward, gradient, "lagrax solve", repeats)


def accel(repeats):
    for dof, width in ((2, 128), (8, 64)):
        model = lagrax.MLPLagrangian(dof, width=width, depth=2, key=jax.random.key(0))
        q = jax.random.normal(jax.random.key(1), (512, dof))
        qdot = jax.random.normal(jax.random.key(2), (512, dof))
        forward, gradient = {}, {}
        for name, solve in (
            ("lagrax solve", _linalg.solve),
            ("lineax + PivotedLU", lineax_solve),
        ):
            # `acceleration` reads `_mechanics.solve` when it is traced.
            def accelerations(model, solve=solve):
                _mechanics.solve = solve
                try:
                    return jax.vmap(lambda q, v: lagrax.acceleration(model, q, v))(
                        q, qdot
                    )
                finally:
                    _mechanics.solve = _linalg.solve

            def loss(model, accelerations=accelerations):
                return jnp.mean(jnp.abs(accelerations(model)))

            forward[name] = functools.partial(eqx.filter_jit(accelerations), model)
            gradient[name] = functools.partial(
                eqx.filter_jit(eqx.filter_grad(loss)), model
            )
        title = f"acceleration, MLP dof {dof} width {width}, batch 512"
        report_both(title, forward, gradient, "lagrax solve", repeats)


def block_jacobi(matrix):
    inverses, _ = jax.vmap(_linalg.inverse)(matrix.diagonal)
    none = jnp.zeros((0, matrix.block_size, matrix.block_size), inverses.dtype)
    return _graph.BlockSparseMatrix(inverses, none, none, matrix.graph.isolated)


def lineax_bicgstab(matrix, rhs):
    """`BlockSparseMatrix.solve`'s iteration through Lineax: right-preconditioned
    BiCGStab from the preconditioned guess, to `‖r‖₂ ≤ 100·eps·‖rhs‖₂`."""
    eps = float(jnp.finfo(rhs.dtype).eps)
    preconditioner = block_jacobi(jax.lax.stop_gradient(matrix))
    solver = lx.BiCGStab(
        rtol=100 * eps, atol=0.0, max_steps=200, norm=lambda x: jnp.linalg.norm(x)
    )
    options = {"preconditioner": preconditioner, "y0": preconditioner.mv(rhs)}
    return lx.linear_solve(matrix, rhs, solver, options=options, throw=False).value


def graph(repeats):
    for rows in (8, 16):
        springs = lagrax.systems.SpringNetwork.lattice(rows, rows)
        n = 2 * springs.graph.num_nodes
        q = springs.rest_positions() + 0.05 * jnp.sin(jnp.arange(n, dtype=jnp.float32))
        qdot = jnp.cos(jnp.arange(n, dtype=jnp.float32))
        _, stiffness = _graph.sparse_jacobian(
            lambda q: jax.grad(springs)(q, qdot), q, springs.graph, 2
        )
        # A midpoint step's Newton matrix at h = 0.1: M − (h²/4)·∂²L/∂q².
        c = -0.0025
        matrix = _graph.BlockSparseMatrix(
            c * stiffness.diagonal + jnp.eye(2),
            c * stiffness.upper,
            c * stiffness.lower,
            stiffness.graph,
        )
        rhs = jnp.sin(jnp.arange(n, dtype=jnp.float32))
        own = jax.jit(lambda m, b: m.solve(b)[0])
        theirs = jax.jit(lineax_bicgstab)
        gap = float(jnp.max(jnp.abs(own(matrix, rhs) - theirs(matrix, rhs))))
        forward = {
            "BlockSparseMatrix.solve": functools.partial(own, matrix, rhs),
            "lineax BiCGStab (same)": functools.partial(theirs, matrix, rhs),
        }
        gradient = {
            name: functools.partial(
                jax.jit(jax.grad(lambda m, b, fn=fn: jnp.sum(fn(m, b) ** 2))),
                matrix,
                rhs,
            )
            for name, fn in zip(forward, (lambda m, b: m.solve(b)[0], lineax_bicgstab))
        }
        title = f"spring lattice {rows}x{rows} ({n} unknowns), max difference {gap:.1e}"
        report_both(title, forward, gradient, "BlockSparseMatrix.solve", repeats)
    for nodes in (256, 4096):
        chain = _graph.Graph(np.arange(nodes - 1), np.arange(1, nodes), nodes)
        ones = jnp.ones((nodes - 1, 1, 1))
        matrix = _graph.BlockSparseMatrix(
            jnp.full((nodes, 1, 1), 2.5), -ones, -ones, chain
        )
        rhs = jnp.sin(jnp.arange(nodes, dtype=jnp.float32))
        auto = lx.AutoLinearSolver(well_posed=True)
        assert isinstance(auto.select_solver(matrix), lx.Tridiagonal)
        own = jax.jit(lambda m, b: m.solve(b)[0])
        theirs = jax.jit(lambda m, b: lx.linear_solve(m, b, throw=False).value)
        gap = float(jnp.max(jnp.abs(own(matrix, rhs) - theirs(matrix, rhs))))
        forward = {
            "BlockSparseMatrix.solve": functools.partial(own, matrix, rhs),
            "lineax default (Tridiagonal)": functools.partial(theirs, matrix, rhs),
        }
        title = f"scalar chain, {nodes} nodes, max difference {gap:.1e}"
        report(
            title, time_interleaved(forward, repeats=repeats), "BlockSparseMatrix.solve"
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 3 repeats, dense only"
    )
    parser.add_argument(
        "--part", choices=("dense", "accel", "graph", "all"), default="all"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.part = 3, "dense"
    for name, part in (("dense", dense), ("accel", accel), ("graph", graph)):
        if args.part in (name, "all"):
            part(args.repeats)


if __name__ == "__main__":
    main()
