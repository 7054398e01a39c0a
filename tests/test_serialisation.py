import errno
import functools as ft
import hashlib
import io
import json
import os
import tracemalloc
import types

import equinox as eqx
import jax
import jax.monitoring
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from jaxtyping import Array, Float, PRNGKeyArray

import lagrax
from lagrax import _serialisation
from lagrax._train.fingerprint import describe
from lagrax.systems import (
    ChargedParticle,
    DoublePendulum,
    HarmonicOscillator,
    RelativisticParticle,
)


def _same(a, b) -> bool:
    return bool(eqx.tree_equal(a, b, typematch=True))


def _forge(path, header, payload: bytes = b"", *, version: int = 2) -> None:
    """Write a file as `save` would, with a valid digest, whatever `header` holds:
    what a buggy or hostile writer could produce."""
    encoded = header if isinstance(header, bytes) else json.dumps(header).encode()
    digest = hashlib.sha256(encoded + payload).digest()
    head = b"LAGRAX\x00" + bytes([version]) + len(encoded).to_bytes(8, "big")
    path.write_bytes(head + digest + encoded + payload)


def _parts(raw: bytes) -> tuple[dict, bytes]:
    """`(header, payload)` of a format-2 file."""
    end = 48 + int.from_bytes(raw[8:16], "big")
    return json.loads(raw[48:end]), raw[end:]


class Springs(lagrax.AbstractLagrangian):
    """A user's own Lagrangian: unit masses on springs of learnable stiffness."""

    stiffness: Float[Array, " dof"]
    dof: int = eqx.field(static=True)

    def __init__(self, dof: int, *, key: PRNGKeyArray):
        self.stiffness = jr.uniform(key, (dof,))
        self.dof = dof

    def __call__(self, q: Float[Array, " dof"], qdot: Float[Array, " dof"]):
        return 0.5 * jnp.sum(qdot**2 - self.stiffness * q**2)


def _springs_config(model: Springs) -> dict:
    return dict(dof=model.dof)


def _springs_build(config: dict) -> Springs:
    return Springs(config["dof"], key=jr.key(0))


@pytest.fixture
def registry(monkeypatch):
    """A registry holding lagrax's own models, as a fresh process has; what a test
    registers is forgotten after it."""
    monkeypatch.setattr(_serialisation, "_REGISTRY", dict(_serialisation._REGISTRY))
    return _serialisation._REGISTRY


@pytest.mark.parametrize(
    "make",
    [
        lambda: lagrax.MLPLagrangian(2, width=8, depth=2, key=jr.key(0)),
        lambda: lagrax.MLPLagrangian(
            1, width=4, depth=1, activation=jnp.tanh, dtype=jnp.float32, key=jr.key(0)
        ),
        lambda: lagrax.MLPLagrangian(3, width=8, depth=2, angles=(0, 2), key=jr.key(0)),
        lambda: lagrax.NeuralODEBaseline(2, width=8, depth=1, key=jr.key(0)),
        lambda: lagrax.NeuralODEBaseline(
            2, width=8, depth=1, angles=(1,), key=jr.key(0)
        ),
        lambda: lagrax.HamiltonianNN(1, width=8, depth=2, key=jr.key(0)),
        lambda: DoublePendulum(m1=1.3, l2=0.7),
        lambda: ChargedParticle(magnetic_field=(0.0, 1.0, 2.0)),
    ],
    ids=[
        "mlp",
        "mlp-f32-tanh",
        "mlp-angles",
        "node",
        "node-angles",
        "hnn",
        "double-pendulum",
        "charged",
    ],
)
def test_roundtrip(tmp_path, make):
    model = make()
    path = tmp_path / "model.lagrax"
    lagrax.save(path, model)
    loaded = lagrax.load(path)
    assert type(loaded) is type(model)
    assert _same(loaded, model)


def test_custom_models_need_like(tmp_path):
    system = RelativisticParticle(g=2.0)
    model = lagrax.HamiltonianNN(
        1, width=4, depth=1, momentum=ft.partial(lagrax.momentum, system), key=jr.key(0)
    )
    path = tmp_path / "hnn.lagrax"
    lagrax.save(path, model)
    with pytest.raises(ValueError, match="like"):
        lagrax.load(path)
    skeleton = lagrax.HamiltonianNN(
        1, width=4, depth=1, momentum=model.momentum, key=jr.key(1)
    )
    assert _same(lagrax.load(path, like=skeleton), model)
    assert not _same(skeleton, model)


def test_bad_files_fail_clearly(tmp_path):
    model = lagrax.MLPLagrangian(2, width=8, depth=2, key=jr.key(0))
    path = tmp_path / "model.lagrax"
    lagrax.save(path, model)
    raw = path.read_bytes()

    truncated = tmp_path / "truncated.lagrax"
    truncated.write_bytes(raw[: len(raw) - 100])
    with pytest.raises(ValueError, match="truncated"):
        lagrax.load(truncated)
    truncated.write_bytes(raw[:20])
    with pytest.raises(ValueError, match="truncated"):
        lagrax.load(truncated)
    truncated.write_bytes(b"")
    with pytest.raises(ValueError, match="truncated"):
        lagrax.load(truncated)

    corrupt = tmp_path / "corrupt.lagrax"
    flipped = bytearray(raw)
    flipped[-10] ^= 0xFF
    corrupt.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="corrupt"):
        lagrax.load(corrupt)

    other = tmp_path / "other.eqx"
    eqx.tree_serialise_leaves(other, model)  # a plain Equinox file
    with pytest.raises(ValueError, match="not a lagrax file"):
        lagrax.load(other)

    wider = lagrax.MLPLagrangian(2, width=16, depth=2, key=jr.key(0))
    with pytest.raises(ValueError, match="does not match"):
        lagrax.load(path, like=wider)
    with pytest.raises(ValueError, match="MLPLagrangian"):
        lagrax.load(path, like=DoublePendulum())


def test_loaded_model_predicts_the_same(tmp_path):
    model = lagrax.MLPLagrangian(2, width=8, depth=2, key=jr.key(3))
    path = tmp_path / "model.lagrax"
    lagrax.save(path, model)
    loaded = lagrax.load(path)
    q, qdot = jnp.array([0.1, 0.2]), jnp.array([0.3, -0.4])
    a = eqx.filter_jit(lagrax.acceleration)(model, q, qdot)
    b = eqx.filter_jit(lagrax.acceleration)(loaded, q, qdot)
    assert jnp.array_equal(a, b)


@pytest.mark.parametrize(
    "make",
    [
        lambda: lagrax.MLPLagrangian(2, width=3, depth=1, angles=(0,), key=jr.key(0)),
        lambda: DoublePendulum(m1=1.3),
    ],
    ids=["mlp", "double-pendulum"],
)
def test_every_corruption_is_caught(tmp_path, make):
    model = make()
    path = tmp_path / "model.lagrax"
    lagrax.save(path, model)
    raw = path.read_bytes()
    header_end = 48 + int.from_bytes(raw[8:16], "big")
    flips = [(i, 0xFF) for i in range(len(raw))]
    flips += [(i, 1 << bit) for i in range(header_end) for bit in range(8)]
    # One byte is changed and restored in place: reopening the file for each
    # flip would cost more than the loads.
    fd = os.open(path, os.O_WRONLY)
    try:
        for i, mask in flips:
            os.pwrite(fd, bytes([raw[i] ^ mask]), i)
            try:
                loaded = lagrax.load(path)
            except ValueError as e:
                assert repr(os.fspath(path)) in str(e)
            else:
                assert _same(loaded, model), (i, mask)
            os.pwrite(fd, raw[i : i + 1], i)
    finally:
        os.close(fd)
    assert path.read_bytes() == raw


def test_header_is_checksummed(tmp_path):
    model = lagrax.MLPLagrangian(2, width=3, depth=1, angles=(0,), key=jr.key(0))
    path = tmp_path / "model.lagrax"
    lagrax.save(path, model)
    raw = path.read_bytes()
    assert raw.count(b'"angles": [0]') == 1
    # One bit: "0" is 0x30, "1" 0x31, and angles=(1,) has the same array shapes.
    path.write_bytes(raw.replace(b'"angles": [0]', b'"angles": [1]'))
    with pytest.raises(ValueError, match="checksum"):
        lagrax.load(path)


@pytest.mark.parametrize(
    "header, match",
    [
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (dict(payload_bytes=0), "`kind`"),
        (dict(kind="model", payload_bytes="0"), "`payload_bytes`"),
        (dict(kind="model", payload_bytes=5), "bytes of parameters"),
        (dict(kind=3, payload_bytes=0), "`kind`"),
        (dict(kind="model", model=["x"], payload_bytes=0), "`model`"),
        (
            dict(kind="model", model="builtins:tuple", config=[1], payload_bytes=0),
            "`config`",
        ),
        (
            dict(
                kind="model",
                model="lagrax._lagrangian:MLPLagrangian",
                config=dict(dof=2, activation="nope"),
                structure=dict(treedef="*", leaves=[]),
                payload_bytes=0,
            ),
            "cannot rebuild",
        ),
        (
            dict(
                kind="model",
                model="lagrax._lagrangian:MLPLagrangian",
                config=dict(dof=2, width=3, depth=1, activation="tanh", dtype="f8"),
                structure=dict(treedef="*", leaves=[]),
                payload_bytes=0,
            ),
            "does not match",
        ),
    ],
)
def test_malformed_headers_give_value_error(tmp_path, header, match):
    path = tmp_path / "forged.lagrax"
    _forge(path, header)
    with pytest.raises(ValueError, match=match) as info:
        lagrax.load(path)
    assert repr(os.fspath(path)) in str(info.value)


@pytest.mark.parametrize(
    "structure",
    [None, [], dict(treedef=1, leaves=[]), dict(treedef="*", leaves=[["a"]])],
)
def test_malformed_structures_give_value_error(tmp_path, structure):
    model = lagrax.MLPLagrangian(2, width=3, depth=1, key=jr.key(0))
    path = tmp_path / "model.lagrax"
    lagrax.save(path, model)
    header, payload = _parts(path.read_bytes())
    _forge(path, dict(header, structure=structure), payload)
    with pytest.raises(ValueError, match="`structure`"):
        lagrax.load(path, like=model)


@pytest.mark.parametrize("version, match", [(1, "earlier"), (3, "newer")])
def test_other_format_versions_are_refused(tmp_path, version, match):
    path = tmp_path / "model.lagrax"
    _forge(path, dict(kind="model", payload_bytes=0), version=version)
    with pytest.raises(ValueError, match=f"format {version}.*{match}"):
        lagrax.load(path)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664)])
def test_permissions_follow_the_umask(tmp_path, umask, mode):
    model = DoublePendulum()
    old = os.umask(umask)
    try:
        lagrax.save(tmp_path / "model.lagrax", model)
        _serialisation.write_checkpoint(tmp_path / "run.ckpt", model, {})
    finally:
        os.umask(old)
    for name in ("model.lagrax", "run.ckpt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode


def test_missing_folder_is_named(tmp_path):
    target = tmp_path / "x" / "y" / "model.lagrax"
    with pytest.raises(FileNotFoundError) as info:
        lagrax.save(target, DoublePendulum())
    message = str(info.value)
    assert repr(os.fspath(target)) in message
    assert repr(os.fspath(target.parent)) in message and "does not exist" in message


def test_write_errors_name_the_target_and_keep_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "model.lagrax"
    lagrax.save(path, DoublePendulum(m1=2.0))

    def replace(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", src)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="No space left") as info:
        lagrax.save(path, DoublePendulum(m1=3.0))
    assert repr(os.fspath(path)) in str(info.value)
    assert ".tmp" not in str(info.value)
    monkeypatch.undo()
    assert lagrax.load(path).m1 == 2.0
    assert [p.name for p in tmp_path.iterdir()] == ["model.lagrax"]

    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(IsADirectoryError) as info:
        lagrax.save(folder, DoublePendulum())
    assert repr(os.fspath(folder)) in str(info.value)
    assert ".tmp" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "model.lagrax"]


@pytest.mark.parametrize(
    "make_like, match",
    [
        (
            lambda: lagrax.MLPLagrangian(
                2, width=3, depth=1, angles=(1,), key=jr.key(1)
            ),
            "angles",
        ),
        (
            lambda: lagrax.MLPLagrangian(
                2, width=3, depth=1, angles=(0,), activation=jnp.tanh, key=jr.key(1)
            ),
            "activation",
        ),
        (
            lambda: lagrax.MLPLagrangian(
                3, width=3, depth=1, angles=(0,), key=jr.key(1)
            ),
            "dof",
        ),
        (
            lambda: lagrax.MLPLagrangian(
                2, width=4, depth=1, angles=(0,), key=jr.key(1)
            ),
            "width",
        ),
        (
            lambda: lagrax.MLPLagrangian(
                2, width=3, depth=1, angles=(0,), activation=jnp.sin, key=jr.key(1)
            ),
            r"`\.activation`.*softplus.*sin",
        ),
    ],
    ids=["angles", "activation", "dof", "width", "unnamed-activation"],
)
def test_like_with_another_configuration_is_refused(tmp_path, make_like, match):
    model = lagrax.MLPLagrangian(2, width=3, depth=1, angles=(0,), key=jr.key(0))
    path = tmp_path / "model.lagrax"
    lagrax.save(path, model)
    with pytest.raises(ValueError, match=match):
        lagrax.load(path, like=make_like())


def test_like_structure_is_checked_for_unregistered_models(tmp_path):
    model = eqx.nn.MLP(2, 1, 3, 1, activation=jax.nn.softplus, key=jr.key(0))
    path = tmp_path / "mlp.lagrax"
    lagrax.save(path, model)
    with pytest.raises(ValueError, match="register_model"):
        lagrax.load(path)
    like = eqx.nn.MLP(2, 1, 3, 1, activation=jax.nn.softplus, key=jr.key(1))
    assert _same(lagrax.load(path, like=like), model)
    tanh = eqx.nn.MLP(2, 1, 3, 1, activation=jnp.tanh, key=jr.key(1))
    with pytest.raises(ValueError, match=r"`\.activation`.*softplus.*tanh"):
        lagrax.load(path, like=tanh)
    deeper = eqx.nn.MLP(2, 1, 3, 2, activation=jax.nn.softplus, key=jr.key(1))
    with pytest.raises(ValueError, match="static structures differ"):
        lagrax.load(path, like=deeper)


def test_like_takes_the_files_values(tmp_path):
    # A system's parameters are leaves, saved with it: `like` needs the same
    # class, not the same values.
    path = tmp_path / "pendulum.lagrax"
    lagrax.save(path, DoublePendulum(m1=1.3, g=3.0))
    loaded = lagrax.load(path, like=DoublePendulum())
    assert (loaded.m1, loaded.g) == (1.3, 3.0)


def test_registered_model_roundtrips(tmp_path, registry):
    lagrax.register_model(Springs, config=_springs_config, build=_springs_build)
    model = Springs(3, key=jr.key(1))
    path = tmp_path / "springs.lagrax"
    lagrax.save(path, model)
    header, _ = _parts(path.read_bytes())
    assert header["model"] == f"{Springs.__module__}:Springs"
    assert header["config"] == dict(dof=3)
    loaded = lagrax.load(path)
    assert type(loaded) is Springs
    assert _same(loaded, model)
    with pytest.raises(ValueError, match="its dof is 3 where `like`'s is 2"):
        lagrax.load(path, like=Springs(2, key=jr.key(1)))


def test_unregistered_model_says_what_to_do(tmp_path, registry, monkeypatch):
    lagrax.register_model(Springs, config=_springs_config, build=_springs_build)
    model = Springs(2, key=jr.key(1))
    path = tmp_path / "springs.lagrax"
    lagrax.save(path, model)
    monkeypatch.delitem(registry, f"{Springs.__module__}:Springs")  # a new program
    with pytest.raises(ValueError, match="Springs.*register_model.*like=") as info:
        lagrax.load(path)
    assert repr(os.fspath(path)) in str(info.value)
    assert _same(lagrax.load(path, like=Springs(2, key=jr.key(5))), model)


def test_registering_again_replaces(tmp_path, registry):
    lagrax.register_model(Springs, config=_springs_config, build=_springs_build)
    lagrax.register_model(Springs, config=lambda model: None, build=_springs_build)
    path = tmp_path / "springs.lagrax"
    lagrax.save(path, Springs(2, key=jr.key(1)))
    with pytest.raises(ValueError, match="without settings.*like="):
        lagrax.load(path)
    lagrax.register_model(Springs, config=_springs_config, build=_springs_build)
    lagrax.save(path, Springs(2, key=jr.key(1)))
    assert _same(lagrax.load(path), Springs(2, key=jr.key(1)))


def test_register_model_checks_its_arguments(registry):
    with pytest.raises(TypeError):
        lagrax.register_model(Springs(2, key=jr.key(0)), config=_springs_config)  # pyright: ignore
    with pytest.raises(TypeError):
        lagrax.register_model(Springs, config=3)  # pyright: ignore
    with pytest.raises(TypeError):
        lagrax.register_model(Springs, config=_springs_config, build="Springs")  # pyright: ignore
    assert f"{Springs.__module__}:Springs" not in registry


@pytest.mark.parametrize("config", [[1], {"dof": object()}, {1: 2}])
def test_config_must_be_json(tmp_path, registry, config):
    lagrax.register_model(Springs, config=lambda model: config)
    with pytest.raises(TypeError, match="config"):
        lagrax.save(tmp_path / "springs.lagrax", Springs(2, key=jr.key(0)))


def test_load_compiles_nothing(tmp_path):
    # The first load may compile what does not depend on the model (Equinox makes
    # one scalar); a model of new shapes must then compile nothing.
    path = tmp_path / "model.lagrax"
    lagrax.save(path, DoublePendulum())
    lagrax.load(path)
    model = lagrax.MLPLagrangian(
        3, width=5, depth=1, angles=(2,), init="default", key=jr.key(0)
    )
    lagrax.save(path, model)
    compiled = []

    def listen(event: str, duration_secs: float, **kwargs: str | int) -> None:
        if "backend_compile" in event:
            compiled.append(event)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        loaded = lagrax.load(path)
        lagrax.load(path, like=model)
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert compiled == []
    assert _same(loaded, model)


def test_checkpoints_roundtrip_and_check_their_structure(tmp_path):
    model = lagrax.MLPLagrangian(2, width=3, depth=1, key=jr.key(0))
    state = (model, (jnp.zeros(3), jnp.array(4, dtype=jnp.int32)))
    info = dict(step=4, history=dict(loss=[1.0, float("nan")]))
    path = tmp_path / "run.ckpt"
    _serialisation.write_checkpoint(path, state, info)
    skeleton = (
        lagrax.MLPLagrangian(2, width=3, depth=1, key=jr.key(1)),
        (jnp.ones(3), jnp.array(0, dtype=jnp.int32)),
    )
    loaded, loaded_info = _serialisation.read_checkpoint(path, skeleton)
    assert _same(loaded, state)
    assert loaded_info["step"] == 4 and loaded_info["history"]["loss"][0] == 1.0
    tanh = lagrax.MLPLagrangian(2, width=3, depth=1, activation=jnp.tanh, key=jr.key(1))
    with pytest.raises(ValueError, match="activation"):
        _serialisation.read_checkpoint(path, (tanh, skeleton[1]))
    with pytest.raises(ValueError, match="not a checkpoint"):
        lagrax.save(path, model)
        _serialisation.read_checkpoint(path, skeleton)
    _serialisation.write_checkpoint(path, state, info)
    with pytest.raises(ValueError, match="not a saved model"):
        lagrax.load(path)


def _peak_memory(run) -> tuple[Exception, int]:
    """The exception `run()` raises, and the most memory (in bytes, NumPy's arrays
    included) that Python allocated meanwhile over what it held before."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        with pytest.raises(ValueError) as info:
            run()
        return info.value, tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "system, count",
    [
        (lambda: lagrax.systems.Wave1D(5), 10**8),
        (lambda: lagrax.systems.SpringNetwork.chain(3), 10**9),
    ],
    ids=["wave", "springs"],
)
def test_huge_settings_are_refused_before_building(tmp_path, system, count):
    # A small file whose settings claim a huge model (what anyone can write: the
    # digest has no key) is refused before anything is built to their measure.
    path = tmp_path / "system.lagrax"
    lagrax.save(path, system())
    header, payload = _parts(path.read_bytes())
    _forge(path, dict(header, config=dict(header["config"], num_nodes=count)), payload)
    assert path.stat().st_size < 2000
    error, peak = _peak_memory(lambda: lagrax.load(path))
    message = str(error)
    assert repr(os.fspath(path)) in message
    assert f"`num_nodes` is {count}" in message and "like=" in message
    assert peak < 100 * 2**20


def test_structure_beyond_the_payload_is_refused_before_building(tmp_path, registry):
    built = []

    def build(config):
        built.append(config)
        return _springs_build(config)

    lagrax.register_model(Springs, config=_springs_config, build=build)
    path = tmp_path / "springs.lagrax"
    lagrax.save(path, Springs(3, key=jr.key(0)))
    header, payload = _parts(path.read_bytes())
    ((leaf, description),) = header["structure"]["leaves"]
    assert description == "float64[3]"
    claimed = 10**9
    structure = dict(header["structure"], leaves=[[leaf, f"float64[{claimed}]"]])
    _forge(path, dict(header, structure=structure), payload)
    with pytest.raises(ValueError, match=f"arrays of {8 * claimed} bytes") as info:
        lagrax.load(path)
    assert repr(os.fspath(path)) in str(info.value)
    assert built == []
    # Built from settings, a model must have the structure the file records too.
    model = lagrax.MLPLagrangian(2, width=3, depth=1, angles=(0,), key=jr.key(0))
    lagrax.save(path, model)
    header, payload = _parts(path.read_bytes())
    _forge(path, dict(header, config=dict(header["config"], angles=[1])), payload)
    with pytest.raises(ValueError, match="MLPLagrangian` built.*structures differ"):
        lagrax.load(path)


def test_array_headers_beyond_the_payload_are_refused(tmp_path):
    # The payload's arrays carry their own (NumPy) headers, from which `np.load`
    # allocates before reading: one claiming 10⁸ elements is refused unread.
    model = Springs(3, key=jr.key(0))
    path = tmp_path / "springs.lagrax"
    lagrax.save(path, model)
    header, _ = _parts(path.read_bytes())
    claimed = 10**8
    forged = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        forged, dict(descr="<f8", fortran_order=False, shape=(claimed,))
    )
    payload = forged.getvalue() + bytes(24)
    _forge(path, dict(header, payload_bytes=len(payload)), payload)
    error, peak = _peak_memory(lambda: lagrax.load(path, like=model))
    assert f"({claimed},)" in str(error) and repr(os.fspath(path)) in str(error)
    assert peak < 100 * 2**20


def _tanh(x):
    return jnp.tanh(x)


def _softplus(x):
    return jax.nn.softplus(x)


@pytest.mark.parametrize(
    "saved, other",
    [
        # Functions alike in name (`<lambda>`) and unlike in what they compute.
        (lambda: lambda x: _tanh(x), lambda: lambda x: _softplus(x)),
        (
            lambda: ft.partial(jax.nn.celu, alpha=0.5),
            lambda: ft.partial(jax.nn.celu, alpha=2.0),
        ),
    ],
    ids=["lambda", "partial"],
)
def test_like_with_another_function_of_the_same_name_is_refused(tmp_path, saved, other):
    def make(activation, key):
        return lagrax.MLPLagrangian(
            2, width=3, depth=1, activation=activation, key=jr.key(key)
        )

    model = make(saved(), 0)
    q, qdot = jnp.array([0.3, -2.0]), jnp.array([1.0, 2.0])
    assert model(q, qdot) != make(other(), 0)(q, qdot)  # they do differ
    path = tmp_path / "model.lagrax"
    lagrax.save(path, model)
    with pytest.raises(ValueError, match=r"does not match `like`: at `\.activation`"):
        lagrax.load(path, like=make(other(), 1))
    # The same function made anew (another object, the same code and values).
    loaded = lagrax.load(path, like=make(saved(), 1))
    assert _same(eqx.filter(loaded, eqx.is_array), eqx.filter(model, eqx.is_array))
    assert loaded(q, qdot) == model(q, qdot)


class _Scale:
    """An object whose repr is its memory address."""

    def __init__(self, factor: float):
        self.factor = factor


def test_functions_that_cannot_be_told_apart_are_refused(tmp_path):
    scale = _Scale(2.0)
    model = lagrax.MLPLagrangian(
        2, width=3, depth=1, activation=lambda x: scale.factor * _tanh(x), key=jr.key(0)
    )
    path = tmp_path / "model.lagrax"
    lagrax.save(path, model)
    assert b"0x" not in path.read_bytes()
    match = r"`like`'s `\.activation` cannot be told apart.*_Scale.*memory address"
    with pytest.raises(ValueError, match=match) as info:
        lagrax.load(path, like=model)
    assert "top level of a module" in str(info.value)


def test_functions_are_described_by_what_they_are():
    def closure(factor):
        return lambda x: factor * _tanh(x)

    assert describe(_tanh) == f"{__name__}._tanh"  # a top-level function: its name
    assert describe(closure(2.0)) == describe(closure(2.0))
    assert describe(closure(2.0)) != describe(closure(3.0))
    assert describe(closure(jnp.arange(20.0))) != describe(closure(jnp.ones(20)))
    assert describe(lambda x: _tanh(x)) != describe(lambda x: _softplus(x))
    assert describe(lambda x, a=1.0: a * x) != describe(lambda x, a=2.0: a * x)
    # A top-level function of `__main__` is another program's in another process.
    main = types.FunctionType(_tanh.__code__, _tanh.__globals__, "_tanh")
    main.__module__ = "__main__"
    assert describe(main).startswith("__main__._tanh#")
    unverifiable = describe(ft.partial(_tanh, _Scale(1.0)))
    assert unverifiable.startswith("unverifiable: ") and "0x" not in unverifiable


def test_resume_refuses_a_model_with_another_function(tmp_path):
    box = ([-1.0], [1.0])
    q, qdot = lagrax.sample_states(8, q_box=box, qdot_box=box, key=jr.key(0))
    data = lagrax.acceleration_data(HarmonicOscillator(), q, qdot)
    optimizer = optax.adam(1e-2)

    def make(alpha):
        activation = ft.partial(jax.nn.celu, alpha=alpha)
        return lagrax.MLPLagrangian(
            1, width=8, depth=1, activation=activation, key=jr.key(0)
        )

    # The checkpoint of a run with alpha=0.5, `fit`'s state as it writes it (what
    # tests/test_train_fit.py reads back), without the cost of training.
    model = make(0.5)
    state = (model, optimizer.init(eqx.filter(model, eqx.is_inexact_array)))
    path = tmp_path / "run.ckpt"
    _serialisation.write_checkpoint(path, state, {})
    match = r"at `\[0\]\.activation` .*alpha=0\.5\) where this run has .*alpha=2\.0\)"
    with pytest.raises(ValueError, match=match):
        lagrax.fit(
            make(2.0),
            lagrax.acceleration_loss,
            data,
            optimizer=optimizer,
            steps=1,
            batch_size=8,
            key=jr.key(1),
            checkpoint=path,
            resume=True,
            progress=False,
        )
