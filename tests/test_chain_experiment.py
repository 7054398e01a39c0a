"""The chain-pendulum experiment (lagrax.experiments.chain_pendulum): its metric
against hand-computed values, its ground truth against an independent solve, the
chaos floor, its settings, and a tiny run end to end through `lagrax
reproduce`."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from .test_cli import _main, _one_error_line, _strict_json


def test_metric_by_hand():
    from lagrax.experiments import chain_pendulum as cp

    target = jnp.array([[[1.0, 0.0], [1.0, 0.0], [2.0, 0.0]]])
    predicted = jnp.array([[[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]])
    # ‖ẑ − z‖ / ‖ẑ + z‖: 0; 1 / √5; 2 / 2.
    error = cp.relative_error(predicted, target)
    np.testing.assert_allclose(error, [0.0, 1 / math.sqrt(5), 1.0], rtol=1e-14)
    # A failed rollout counts 1, and the mean is over trajectories.
    both = cp.relative_error(
        jnp.concatenate([predicted, jnp.full_like(predicted, jnp.inf)]),
        jnp.concatenate([target, target]),
    )
    np.testing.assert_allclose(both, (error + 1) / 2, rtol=1e-14)
    # exp(trapz(log(e + 1e-8), dx=0.03) / T) over T = 0.06.
    expected = math.exp(
        (
            math.log(1e-8) / 2
            + math.log(1 / math.sqrt(5) + 1e-8)
            + math.log(1 + 1e-8) / 2
        )
        * 0.03
        / 0.06
    )
    assert cp.geometric_mean(error) == pytest.approx(expected, rel=1e-12)
    # A constant error is its own geometric mean; a perfect one is the 1e-8 floor.
    assert cp.geometric_mean(jnp.full(101, 3e-4)) == pytest.approx(3e-4, rel=1e-4)
    assert cp.geometric_mean(jnp.zeros(101)) == pytest.approx(1e-8, rel=1e-12)


def test_truth_stays_on_the_chain_agrees_with_rattle_and_sets_a_floor():
    import lagrax
    from lagrax.experiments import chain_pendulum as cp

    settings = cp.Settings(
        bodies="3", train_trajectories=4, held_out=4, trajectories=""
    )
    data = cp.data(settings, 3)
    system = cp.chain(3)
    test = data.test_cartesian
    # The Cartesian truth is on the links (positions and velocities).
    residual = jax.vmap(jax.vmap(system.constraint))(test.q)
    assert float(jnp.max(jnp.abs(residual))) < 1e-12
    velocity = jax.vmap(
        jax.vmap(lambda q, v: jax.jvp(system.constraint, (q,), (v,))[1])
    )
    assert float(jnp.max(jnp.abs(velocity(test.q, test.qdot)))) < 1e-12
    # The training chunks are 5 consecutive samples of motions of that chain.
    assert data.train_cartesian.q.shape == (4, 5, 6)
    np.testing.assert_allclose(data.train_cartesian.ts, 0.03 * np.arange(5))
    # An independent solve: the Cartesian form under Rattle, a small fixed step,
    # agrees with the angle form under Tsit5 (measured 3e-7 at this step).
    rattle = lagrax.rollout(
        system, test, solver=lagrax.Rattle(), dt0=0.0005, constraint=system.constraint
    )
    truth = jnp.concatenate([test.q, test.qdot], axis=-1)
    both = jnp.concatenate([rattle.q, rattle.qdot], axis=-1)
    assert cp.geometric_mean(cp.relative_error(both, truth)) < 3e-6
    # The truth against itself is the metric's floor; the chaos floor is what a
    # perturbation of 1e-4 grows to, far above it, and far below an unrelated
    # motion.
    assert cp.geometric_mean(cp.relative_error(truth, truth)) == pytest.approx(1e-8)
    floor = cp.geometric_mean(cp.chaos_floor(settings, data))
    assert 1e-6 < floor < 1e-2


def test_cartesian_model_is_free_particles_at_first_and_exact_when_set():
    import lagrax
    from lagrax.experiments import chain_pendulum as cp

    model = cp.CartesianLagrangian(2, width=8, scale=10.0, key=jr.key(0))
    q, qdot = cp.chain(2).to_cartesian(jnp.array([0.3, -0.2]), jnp.array([1.0, 0.5]))
    np.testing.assert_allclose(lagrax.acceleration(model, q, qdot), 0.0, atol=1e-14)
    # Masses and field of the true chain: the true constrained accelerations.
    masses, _ = cp.CHAINS[2]
    field = jnp.array([0.0, cp.G * masses[0], 0.0, cp.G * masses[1]]) / 10.0
    exact = eqx.tree_at(
        lambda m: (m.log_masses, m.field), model, (jnp.log(jnp.array(masses)), field)
    )
    system = cp.chain(2)
    np.testing.assert_allclose(
        lagrax.acceleration(exact, q, qdot, constraint=system.constraint),
        lagrax.acceleration(system, q, qdot, constraint=system.constraint),
        rtol=1e-12,
    )


def test_settings_are_checked():
    from lagrax.experiments import chain_pendulum as cp

    with pytest.raises(ValueError, match="`bodies`"):
        cp.Settings(bodies="2,4")
    with pytest.raises(ValueError, match="`bodies`"):
        cp.Settings(bodies="2,2")
    with pytest.raises(ValueError, match="`trajectories`"):
        cp.Settings(trajectories="10,1000")
    with pytest.raises(ValueError, match="`potential`"):
        cp.Settings(potential="spline")
    # The data-efficiency runs need 2 bodies; the main run is not trained twice.
    assert cp.efficiency_sizes(cp.Settings(bodies="3,5")) == ()
    assert cp.efficiency_sizes(cp.Settings(trajectories="10,800")) == (10,)
    with pytest.raises(ValueError, match="`cartesian_solver`"):
        cp.Settings(cartesian_solver="euler")
    assert "cartesian_2_k10.ckpt" in cp.files_written(cp.Settings())


def test_bad_bodies_is_one_line(tmp_path, capsys):
    argv = ["reproduce", "chain-pendulum", "--bodies", "7", "--out", str(tmp_path)]
    assert _main(argv) == 2
    assert "--bodies" in _one_error_line(capsys.readouterr().err)
    assert not any(tmp_path.iterdir())


def test_tiny_run_end_to_end(tmp_path, monkeypatch):
    # Every stage of a run but the training (compiling the training steps takes
    # minutes), on tiny settings: data, the untrained models' rollouts through
    # plain Rattle (cheaper to compile than Yoshida4) and Tsit5, the chaos floor,
    # the data-efficiency table, the report.
    import lagrax
    from lagrax.experiments import chain_pendulum as cp

    trained = []

    def untrained(settings, model, kind, train, test, name, **kwargs):
        trained.append((name, len(train)))
        one = np.ones(1)
        history = lagrax.History(one, one < 0, one.astype(int), one, {})
        return model, history, dict(train_seconds=0.0, skipped_steps=0)

    monkeypatch.setattr(cp, "train_one", untrained)

    settings = cp.Settings(
        bodies="2",
        steps=1,
        baseline_steps=1,
        batch_size=4,
        width=4,
        potential_width=4,
        cartesian_solver="rattle",
        train_trajectories=3,
        held_out=3,
        trajectories="1",
    )
    report = cp.run(settings, progress=False)
    # The data-efficiency run sees its chunk repeated to the 3 of the main run.
    assert sorted(trained) == [
        ("angles_2", 3),
        ("cartesian_2", 3),
        ("cartesian_2_k1", 3),
        ("node_2", 3),
    ]
    report.save(tmp_path)
    record = _strict_json(tmp_path / "results.json")
    assert record["experiment"] == "chain-pendulum"
    assert record["settings"]["bodies"] == "2"
    geom = record["rollout_geom_mean"]
    assert set(geom) == {"2"}
    assert set(geom["2"]) == {"cartesian", "angles", "node", "chaos_floor"}
    assert set(record["data_efficiency"]) == {"1", "3"}
    assert record["data_efficiency"]["3"] == geom["2"]["cartesian"]
    assert set(record["paper"]["rollout_geom_mean"]) == {"2", "3", "5"}
    # Untrained models are far off the truth; the chaos floor is not.
    assert geom["2"]["chaos_floor"] < 1e-3
    for model in ("cartesian", "angles", "node"):
        assert geom["2"]["chaos_floor"] < geom["2"][model] <= 1.0
    assert set(record["models"]) == {
        "cartesian_2",
        "angles_2",
        "node_2",
        "cartesian_2_k1",
    }
    assert set(cp.files_written(settings)) == {
        "cartesian_2.ckpt",
        "angles_2.ckpt",
        "node_2.ckpt",
        "cartesian_2_k1.ckpt",
        "results.json",
        *cp.FIGURES,
    }
