"""Graph Lagrangians: the sparse path against the dense one, the wave and spring
systems against their closed forms, the graph's symmetries, and bad graphs."""

import re
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import lagrax
from lagrax.systems import SpringNetwork, Wave1D


def _dense(lagrangian):
    """The same Lagrangian as a plain function: lagrax takes the dense path."""
    return lambda q, qdot: lagrangian(q, qdot)


def _random_graph(key, num_nodes, num_edges):
    senders, receivers = jr.randint(key, (2, num_edges), 0, num_nodes)
    # A duplicated edge and a self-loop: both are legal density terms.
    senders = np.append(np.asarray(senders), [senders[0], 2])
    receivers = np.append(np.asarray(receivers), [receivers[0], 2])
    return senders, receivers


def _ring(n):
    """`(senders, receivers)` of a ring of `n` nodes."""
    return np.arange(n), (np.arange(n) + 1) % n


def _state(key, size, scale=0.5):
    q, qdot = scale * jr.normal(key, (2, size))
    return q, qdot


def _close(x, y, rtol):
    """Leafwise `max |x − y| ≤ rtol · max |y|`: round-off scales with the largest
    entry, not with each entry."""
    pairs = zip(
        jax.tree.leaves(eqx.filter(x, eqx.is_array)),
        jax.tree.leaves(eqx.filter(y, eqx.is_array)),
    )
    return all(jnp.max(jnp.abs(a - b)) <= rtol * jnp.max(jnp.abs(b)) for a, b in pairs)


@pytest.mark.parametrize("edge_velocities", [True, False])
def test_sparse_path_matches_dense(getkey, edge_velocities):
    """Without edge velocities the mass matrix is block diagonal: its pattern
    (`mass_graph`) has no pairs and the solve is block by block."""
    senders, receivers = _random_graph(getkey(), 7, 9)
    model = lagrax.GraphLagrangian(
        senders,
        receivers,
        num_nodes=7,
        node_dim=2,
        width=8,
        edge_velocities=edge_velocities,
        key=getkey(),
    )
    q, qdot = _state(getkey(), 14)

    def loss(model, lagrangian):
        return jnp.sum(jnp.sin(lagrax.acceleration(lagrangian(model), q, qdot)))

    @eqx.filter_jit
    def compare(model):
        hessian = jax.hessian(model, argnums=1)(q, qdot)
        sparse = lagrax.graph_mass_matrix(model, q, qdot)
        paths = [
            eqx.filter_value_and_grad(loss)(model, path)
            for path in (lambda m: m, _dense)
        ]
        return hessian, sparse.todense(), sparse.mv(qdot), paths

    hessian, dense_form, product, (sparse_path, dense_path) = compare(model)
    off_diagonal = hessian.reshape(7, 2, 7, 2) * (1 - jnp.eye(7))[:, None, :, None]
    assert (jnp.max(jnp.abs(off_diagonal)) > 1e-6) == edge_velocities
    assert (model.mass_graph.pairs[0].size == 0) != edge_velocities
    # The blocks are exactly the Hessian's entries (the same products, gathered).
    assert jnp.array_equal(dense_form, hessian)
    assert _close(product, hessian @ qdot, 1e-14)
    assert _close(sparse_path, dense_path, 1e-12)


def test_gauss_legendre_takes_the_sparse_path(getkey):
    """A GaussLegendre step gives the same state and parameter gradient on the
    sparse and the dense path: its stage solve (node-major blocks of both stages)
    and its velocity solve run Newton with block-sparse Jacobians on a graph. (One
    step through the solver's own interface: `simulate` around it adds nothing
    graph-specific and doubles the compile time.)"""
    model = lagrax.GraphLagrangian(
        *_ring(6),
        num_nodes=6,
        node_dim=1,
        width=8,
        translation_invariant=True,
        init="default",  # milder than the paper's: no near-singular mass matrix
        key=getkey(),
    )
    y0 = _state(getkey(), 6, scale=0.3)

    def step(model, lagrangian):
        solver = lagrax.GaussLegendre()
        term = lagrax.LagrangianTerm(lagrangian(model))
        state = solver.init(term, 0.0, 0.05, y0, None)
        (q, qdot), _, _, _, result = solver.step(
            term, 0.0, 0.05, y0, None, state, made_jump=False
        )
        return jnp.sum(q**2) + jnp.sum(qdot**2), (q, qdot, result)

    sparse_path, dense_path = eqx.filter_jit(
        lambda model: [
            eqx.filter_value_and_grad(step, has_aux=True)(model, path)
            for path in (lambda m: m, _dense)
        ]
    )(model)
    numbers = []
    for (value, (q, qdot, result)), grad in (sparse_path, dense_path):
        assert result == diffrax.RESULTS.successful
        numbers.append((value, q, qdot, grad))
    assert jnp.max(jnp.abs(numbers[0][1] - y0[0])) > 1e-3  # it moved
    sparse, dense = numbers
    assert _close(sparse, dense, 1e-12)


def test_wave_accelerations_are_exact_at_scale(getkey):
    """The discrete Laplacian at 16,384 nodes, with the compiled computation's
    temporary memory linear in N (a dense mass matrix alone would need 2 GiB)."""
    n = 16384
    wave = Wave1D(n, length=2.0, wave_speed=1.5)
    q, qdot = _state(getkey(), n)
    laplacian = (jnp.roll(q, -1) - 2 * q + jnp.roll(q, 1)) / wave.spacing**2
    compiled = jax.jit(lambda q, qdot: lagrax.acceleration(wave, q, qdot))
    compiled = compiled.lower(q, qdot).compile()
    qddot = compiled(q, qdot)
    assert jnp.allclose(qddot, 1.5**2 * laplacian, rtol=1e-12, atol=1e-6)
    memory = compiled.memory_analysis()
    assert memory is not None
    assert memory.temp_size_in_bytes < 64 * n * 8
    with pytest.raises(ValueError, match="graph_mass_matrix"):
        lagrax.mass_matrix(wave, q, qdot)
    assert lagrax.graph_mass_matrix(wave, q, qdot).diagonal.shape == (n, 1, 1)


def test_wave_normal_mode_and_energy_under_gauss_legendre():
    """A discrete normal mode `cos(2πk x/ℓ)` oscillates as `cos(ω_k t)` with
    `ω_k = (2c/Δx) sin(πk/N)`; at N = 1000 over one period of the slowest wave,
    GaussLegendre keeps the energy to round-off. A wave speed c ≠ 1 (where c and
    c² differ) on a ring of length ℓ ≠ 1 (where Δx is not 1/N)."""
    n, k, length, c = 1000, 3, 3.0, 2.5
    wave = Wave1D(n, length=length, wave_speed=c)
    dx = length / n
    q0 = jnp.cos(2 * jnp.pi * k * jnp.arange(n, dtype=float) / n)
    ts = jnp.linspace(0.0, length / c, 5)
    traj = lagrax.simulate(
        wave,
        q0,
        jnp.zeros(n),
        ts,
        solver=lagrax.GaussLegendre(),
        dt0=dx / c,  # hω < 2 for every mode, as at c = 1 with dt0 = Δx
    )
    omega = 2 * c / dx * np.sin(np.pi * k / n)
    assert wave.frequency(k) == pytest.approx(omega, rel=1e-14)
    exact = jnp.cos(omega * ts)[:, None] * q0[None]
    assert jnp.max(jnp.abs(traj.q - exact)) < 1e-8
    energies = jax.vmap(lagrax.energy, in_axes=(None, 0, 0))(wave, traj.q, traj.qdot)
    assert jnp.max(jnp.abs(energies / energies[0] - 1)) < 1e-12


def test_spring_network_accelerations_follow_hookes_law(getkey):
    """Each spring pulls its ends together with force `k (|d| − ℓ)` along
    `d = x_r − x_s`; gravity adds `−g` to every vertical acceleration."""
    masses, stiffness, rest = jnp.array([1.0, 2.0, 0.5]), jnp.array([3.0, 5.0]), 0.7
    network = SpringNetwork(
        [0, 1],
        [1, 2],
        num_nodes=3,
        masses=masses,
        stiffness=stiffness,
        rest_lengths=rest,
        gravity=9.8,
    )
    q, qdot = _state(getkey(), 6, scale=1.0)
    x = q.reshape(3, 2)
    force = jnp.zeros((3, 2))
    for (s, r), k in zip([(0, 1), (1, 2)], stiffness):
        d = x[r] - x[s]
        pull = k * (jnp.linalg.norm(d) - rest) * d / jnp.linalg.norm(d)
        force = force.at[s].add(pull).at[r].add(-pull)
    expected = force / masses[:, None] - jnp.array([0.0, 9.8])[None, :]
    acceleration = eqx.filter_jit(lagrax.acceleration)
    qddot = acceleration(network, q, qdot).reshape(3, 2)
    assert jnp.allclose(qddot, expected, rtol=1e-12, atol=1e-12)
    lattice = SpringNetwork.lattice(2, 3)
    rest_state = lattice.rest_positions()
    assert jnp.allclose(acceleration(lattice, rest_state, 0 * rest_state), 0)


@pytest.mark.parametrize("cls", [lagrax.GraphLagrangian, lagrax.MessagePassingBaseline])
def test_relabelling_nodes_permutes_accelerations(getkey, cls):
    senders, receivers = _random_graph(getkey(), 6, 8)
    model = cls(senders, receivers, num_nodes=6, node_dim=2, width=8, key=getkey())
    q, qdot = _state(getkey(), 12)
    perm = np.asarray(jr.permutation(getkey(), 6))  # new node a is old node perm[a]
    relabel = np.argsort(perm)  # old node i is new node relabel[i]
    moved = model.with_graph(relabel[senders], relabel[receivers], num_nodes=6)

    def permute(x):
        return x.reshape(6, 2)[perm].reshape(-1)

    @eqx.filter_jit
    def acceleration(model, q, qdot):
        if isinstance(model, lagrax.AbstractDynamics):
            return model.acceleration(q, qdot)
        return lagrax.acceleration(model, q, qdot)

    expected = permute(acceleration(model, q, qdot))
    actual = acceleration(moved, permute(q), permute(qdot))
    assert jnp.allclose(actual, expected, rtol=1e-11, atol=1e-11)


def test_graph_models_save_and_load(getkey, tmp_path):
    graph: dict[str, Any] = dict(num_nodes=3, node_dim=2, width=4)
    models = [
        lagrax.GraphLagrangian([0, 1], [1, 2], **graph, key=getkey()),
        # Position-only edges: other layer shapes, which loading must rebuild.
        lagrax.GraphLagrangian(
            [0, 1], [1, 2], **graph, edge_velocities=False, key=getkey()
        ),
        lagrax.MessagePassingBaseline(
            [0, 1], [1, 2], **graph, translation_invariant=True, key=getkey()
        ),
        Wave1D(7, length=2.0, wave_speed=0.5),
        SpringNetwork.lattice(2, 2, gravity=1.0, masses=[1.0, 2.0, 3.0, 4.0]),
    ]
    for model in models:
        lagrax.save(tmp_path / "model.lagrax", model)
        assert bool(eqx.tree_equal(lagrax.load(tmp_path / "model.lagrax"), model))


def test_with_graph_moves_the_parameters_to_a_longer_ring(getkey):
    """A translation-invariant model on a ring of 8 carrying a state that repeats a
    ring-of-4 state twice: the Lagrangian doubles and the accelerations repeat."""

    model = lagrax.GraphLagrangian(
        *_ring(4),
        num_nodes=4,
        node_dim=1,
        width=8,
        translation_invariant=True,
        key=getkey(),
    )
    longer = model.with_graph(*_ring(8), num_nodes=8)
    assert longer.num_nodes == 8 and model.num_nodes == 4
    assert longer.node_layers is model.node_layers
    q, qdot = _state(getkey(), 4)
    q2, qdot2 = jnp.tile(q, 2), jnp.tile(qdot, 2)
    assert jnp.allclose(longer(q2, qdot2), 2 * model(q, qdot), rtol=1e-13)
    acceleration = eqx.filter_jit(lagrax.acceleration)
    assert jnp.allclose(
        acceleration(longer, q2, qdot2),
        jnp.tile(acceleration(model, q, qdot), 2),
        rtol=1e-11,
    )


class _Frozen(lagrax.AbstractGraphLagrangian):
    """A chain whose first node has no kinetic energy: a singular mass matrix."""

    graph: lagrax.Graph = eqx.field(static=True)
    node_dim: int = eqx.field(static=True, default=1)

    def __call__(self, q, qdot):
        self.check_input(q, qdot)
        return 0.5 * jnp.sum(qdot[1:] ** 2) - 0.5 * jnp.sum(jnp.diff(q) ** 2)


def test_singular_graph_mass_matrix_is_reported():
    system = _Frozen(lagrax.Graph(np.arange(4), np.arange(1, 5), 5))
    q, qdot = jnp.ones(5), jnp.ones(5)
    with pytest.raises(Exception, match="singular"):
        lagrax.acceleration(system, q, qdot)
    assert jnp.all(jnp.isnan(lagrax.acceleration(system, q, qdot, throw=False)))
    solver = lagrax.VariationalMidpoint()
    traj = lagrax.simulate(
        system, q, qdot, jnp.array([0.0, 1.0]), solver=solver, dt0=0.1, throw=False
    )
    assert traj.result == lagrax.RESULTS.singular_mass_matrix


class _Skaters(lagrax.AbstractGraphLagrangian):
    """Masses in the plane on a chain of springs, kinetic energy
    `½ Σ_i (a ẋ_i² + b ẏ_i²)`: every diagonal block of the mass matrix is
    `diag(a, b)`, the off-diagonal ones zero."""

    a: float
    b: float
    graph: lagrax.Graph = eqx.field(static=True)
    node_dim: int = eqx.field(static=True, default=2)

    def __call__(self, q, qdot):
        self.check_input(q, qdot)
        v = qdot.reshape(-1, 2)
        kinetic = 0.5 * jnp.sum(self.a * v[:, 0] ** 2 + self.b * v[:, 1] ** 2)
        return kinetic - 0.5 * jnp.sum(jnp.diff(q.reshape(-1, 2), axis=0) ** 2)


def test_definiteness_penalty_on_graph_diagonal_blocks(getkey):
    """For a graph Lagrangian the penalty sums `max(0, ε − d)` over the pivots `d`
    of every node's diagonal block (`a` and `b` here), in the gauge of the sign of
    the mean trace; it is zero for a definite mass matrix of either sign."""
    graph = lagrax.Graph(np.arange(3), np.arange(1, 4), 4)
    q, qdot = _state(getkey(), 8)
    zero = lagrax.AccelerationData(q[None], qdot[None], jnp.zeros((1, 8)))
    loss = eqx.filter_jit(lagrax.acceleration_loss)

    def penalty(a, b, margin):
        # (By keyword: the checker puts the abstract base's fields first.)
        system = _Skaters(a=a, b=b, graph=graph)
        return loss(system, zero, definiteness=margin) - loss(system, zero)

    assert penalty(1.0, 2.0, 0.5) == 0 and penalty(-1.0, -2.0, 0.5) == 0
    # Pivots 3 and −0.5 (mean trace positive): 4 nodes × (0.5 + 0.5).
    np.testing.assert_allclose(penalty(3.0, -0.5, 0.5), 4 * 1.0, rtol=1e-12)
    # Pivots 0.2 and 0.3, both short of 0.5: 4 × (0.3 + 0.2).
    np.testing.assert_allclose(penalty(0.2, 0.3, 0.5), 4 * 0.5, rtol=1e-12)


@pytest.mark.parametrize(
    "senders, receivers, num_nodes, match",
    [
        ([0, 1], [1, 4], 4, r"receivers.*\[0, num_nodes=4\).*got 4"),
        ([-1, 1], [1, 2], 4, r"senders.*\[0, num_nodes=4\).*got -1"),
        ([0, 1, 2], [1, 2], 4, "same length"),
        ([[0, 1]], [[1, 2]], 4, "1-D"),
        ([0.0, 1.0], [1, 2], 4, "integer"),
        ([0, 1], [1, 2], 0, "num_nodes"),
    ],
)
def test_bad_graphs_are_refused(getkey, senders, receivers, num_nodes, match):
    with pytest.raises((ValueError, TypeError), match=match):
        lagrax.GraphLagrangian(
            senders, receivers, num_nodes=num_nodes, node_dim=1, key=getkey()
        )


def test_bad_graph_inputs_are_refused(getkey):
    model = lagrax.GraphLagrangian([0], [1], num_nodes=2, node_dim=2, key=getkey())
    with pytest.raises(ValueError, match=r"shape \(4,\), node-major; got \(3,\)"):
        lagrax.acceleration(model, jnp.ones(3), jnp.ones(3))
    with pytest.raises(TypeError, match="concrete"):
        jax.jit(lambda s: lagrax.Graph(s, s, 3))(jnp.array([0, 1]))
    with pytest.raises(ValueError, match="num_nodes"):
        Wave1D(2)
    with pytest.raises(ValueError, match=r"stiffness.*shape \(1,\)"):
        SpringNetwork([0], [1], num_nodes=2, stiffness=[1.0, 2.0])


def test_graph_experiment_settings_and_test_pulse():
    from lagrax.experiments import springs, wave

    with pytest.raises(ValueError, match="num_nodes"):
        wave.Settings(num_nodes=10)
    with pytest.raises(ValueError, match="num_masses"):
        springs.Settings(num_masses=1)
    # The test pulse moves right: φ̇ = −c ∂φ/∂x (central differences, 1 cell).
    system = wave.wave(400)
    q, qdot = wave.pulse(system, 16.0)
    slope = (jnp.roll(q, -1) - jnp.roll(q, 1)) / (2 * system.spacing)
    assert jnp.allclose(qdot, -system.wave_speed * slope, atol=2e-4)
    fields = wave.smooth_fields(system, 3, jr.key(0))
    assert fields.shape == (3, 400) and jnp.all(jnp.std(fields, axis=1) > 0.1)


@pytest.mark.parametrize("num_nodes", [7, 40])
def test_block_sparse_solve_small_dense_large_krylov(getkey, num_nodes):
    """`BlockSparseMatrix.solve` on a random graph with 2×2 blocks: dense and exact
    up to 64 rows, indefinite matrices included; BiCGStab above, to round-off, with
    the dense solve's gradient in the blocks and the right-hand side; a singular
    matrix reported at both sizes."""
    senders, receivers = _random_graph(getkey(), num_nodes, 2 * num_nodes)
    graph = lagrax.Graph(senders, receivers, num_nodes)
    pairs = len(graph.pairs[0])
    diagonal = jr.normal(getkey(), (num_nodes, 2, 2))
    # Indefinite at the small size; diagonally dominant at the large one, where the
    # iteration must converge.
    diagonal = diagonal + (0.0 if num_nodes <= 32 else 12.0) * jnp.eye(2)[None]
    upper, lower = 0.5 * jr.normal(getkey(), (2, pairs, 2, 2))
    rhs = jr.normal(getkey(), (2 * num_nodes,))

    def through(solve, blocks, rhs):
        matrix = lagrax.BlockSparseMatrix(blocks[0], blocks[1], blocks[2], graph)
        x = solve(matrix, rhs)
        return jnp.sum(jnp.sin(x)), x

    sparse_solve = lambda m, b: m.solve(b)[0]  # noqa: E731
    dense_solve = lambda m, b: jnp.linalg.solve(m.todense(), b)  # noqa: E731

    @jax.jit
    def compare(blocks, rhs):
        matrix = lagrax.BlockSparseMatrix(blocks[0], blocks[1], blocks[2], graph)
        eigenvalues = jnp.linalg.eigvals(matrix.todense()).real
        singular = lagrax.BlockSparseMatrix(
            blocks[0].at[0].set(0.0), blocks[1].at[:].set(0.0), blocks[2], graph
        )
        return (
            eigenvalues,
            singular.solve(rhs)[1],
            matrix.solve(rhs)[1],
            [
                jax.value_and_grad(through, argnums=(1, 2), has_aux=True)(
                    solve, blocks, rhs
                )
                for solve in (sparse_solve, dense_solve)
            ],
        )

    eigenvalues, singular, failed, (sparse, dense) = compare(
        (diagonal, upper, lower), rhs
    )
    if num_nodes <= 32:
        assert jnp.min(eigenvalues) < 0 < jnp.max(eigenvalues)
    assert not failed and singular
    assert _close(sparse, dense, 1e-11)


def test_indefinite_ring_mass_matrix_is_solved_directly():
    """A freshly initialized model on a long ring has an indefinite mass matrix with
    eigenvalues near zero, where no Krylov method converges in reasonable time:
    chains and rings of scalars are solved directly (tridiagonal, pivoted; the
    ring's corners by Sherman–Morrison) and agree with the dense solve."""
    n = 256
    model = lagrax.GraphLagrangian(
        *_ring(n),
        num_nodes=n,
        node_dim=1,
        width=32,
        key=jr.key(0),
    )
    x = jnp.arange(n) / n
    q = jnp.sin(2 * jnp.pi * x) + 0.3 * jnp.cos(6 * jnp.pi * x)
    qdot = 0.5 * jnp.cos(2 * jnp.pi * x)

    @eqx.filter_jit
    def both(model):
        eigenvalues = jnp.linalg.eigvalsh(lagrax.mass_matrix(model, q, qdot))
        sparse = lagrax.acceleration(model, q, qdot)
        return eigenvalues, sparse, lagrax.acceleration(_dense(model), q, qdot)

    eigenvalues, sparse, dense = both(model)
    assert eigenvalues[0] < 0 < eigenvalues[-1]
    assert _close(sparse, dense, 1e-10)


def _custom_calls(fn, *args) -> list[str]:
    """The custom-call targets of `fn`'s compiled computation, one per call."""
    hlo = jax.jit(fn).lower(*args).compile().as_text()
    assert hlo is not None
    return re.findall(r'custom_call_target="([^"]+)"', hlo)


def test_batched_solves_never_run_two_lapack_calls_at_once(getkey):
    """Batched (vmapped) LAPACK kernels block XLA's CPU pool, and two independent
    ones can deadlock it (it hung `lagrax reproduce wave`'s training): a batch of
    ring accelerations makes one tridiagonal LAPACK call, and a batch of dense
    20-coordinate ones none at all."""
    n = 16
    model = lagrax.GraphLagrangian(
        *_ring(n),
        num_nodes=n,
        node_dim=1,
        width=8,
        key=getkey(),
    )
    params, static = eqx.partition(model, eqx.is_array)
    q, qdot = jr.normal(getkey(), (2, 4, n))
    batched = jax.vmap(lagrax.acceleration, in_axes=(None, 0, 0))
    ring = _custom_calls(
        lambda p, q, qdot: batched(eqx.combine(p, static), q, qdot), params, q, qdot
    )
    assert [call for call in ring if "lapack" in call] == ["lapack_dgtsv_ffi"]
    mass = jnp.eye(20) + 0.1 * jnp.ones((20, 20))
    dense = lambda q, qdot: 0.5 * qdot @ mass @ qdot - 0.5 * q @ q  # noqa: E731
    q, qdot = jr.normal(getkey(), (2, 4, 20))
    calls = _custom_calls(lambda q, qdot: batched(dense, q, qdot), q, qdot)
    assert not [call for call in calls if "lapack" in call]
