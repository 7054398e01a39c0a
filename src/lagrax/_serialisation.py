"""Saving and loading models (and `fit`'s checkpoints) as self-describing files.

A file in format 2, the one written, is

    MAGIC | n | digest | header | payload

with `MAGIC = b"LAGRAX\\x00\\x02"`, `n` the header's length as 8 big-endian bytes,
`digest` the 32-byte SHA-256 of `header + payload`, `header` `n` bytes of UTF-8 JSON
and `payload` the leaves written by `eqx.tree_serialise_leaves`. The digest is
checked before the header is parsed, so a file damaged anywhere fails to load with
a `ValueError` rather than loading as another model. It has no key: it detects
damage, not tampering, since anyone can write a file with a valid digest. So a
header is untrusted input, and every size and count in it is checked before
anything is allocated or built: the header's length against the file's size, the
array bytes its `structure` describes against the payload's, each array's own
(NumPy) header against the leaf it fills and the bytes left, and the integers of
`config` against `_MAX_SETTING` and `_MAX_DEPTH` before the registered `build` runs.

The header holds `kind` (`"model"` or `"checkpoint"`), `payload_bytes`, and the
`structure` of the saved pytree: its treedef (which carries the static fields) and a
description of every leaf (dtype and shape of an array, the type of a number, and
for a function what `lagrax._callables.describe` says: its name if a module defines
it at its top level, else its name, a digest of its code and the values it holds).
A model's header also holds `model`, the `module:qualname` of its class, and
`config`, the JSON settings that the class's `register_model` entry rebuilds it from
(`null` when there are none); a checkpoint's holds `fit`'s `info`.

Format 1 (an unchecked header) is refused with a `ValueError` that says so.
"""

import dataclasses
import hashlib
import io
import json
import math
import os
import pathlib
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
from jaxtyping import PyTree

from . import systems
from ._baselines import HamiltonianNN, MessagePassingBaseline, NeuralODEBaseline
from ._callables import describe, UNVERIFIABLE
from ._files import write_atomic
from ._force import (
    CoulombFriction,
    LearnedDissipation,
    MLPForce,
    RayleighDissipation,
)
from ._graph_lagrangian import GraphLagrangian
from ._lagrangian import MLPLagrangian
from ._mechanical import MechanicalLagrangian


MAGIC = b"LAGRAX\x00\x02"
_SIGNATURE = MAGIC[:-1]
_START = len(MAGIC) + 8 + 32  # where the header begins, after length and digest
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_ARRAY = re.compile(r"([\w<>]+)\[([\d, ]*)\]")  # an array leaf's description
# `load` builds what a header's settings say before it can compare the model with
# the payload, so it refuses, before building, a `config` holding an integer (a
# size, a count, an index) above `_MAX_SETTING`, or a `depth` above `_MAX_DEPTH`: a
# layer is a Python object, ~20 kB and 2 ms to build even under
# `eqx.filter_eval_shape`. A larger model loads with `like=`.
_MAX_SETTING = 2**20
_MAX_DEPTH = 2**10


class _Entry(NamedTuple):
    cls: type
    config: Callable[[Any], dict[str, Any] | None]
    build: Callable[[dict[str, Any]], Any] | None

    def rebuild(self, config: dict[str, Any]) -> Any:
        return self.cls(**config) if self.build is None else self.build(config)


_REGISTRY: dict[str, _Entry] = {}


def _class_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def register_model(
    cls: type,
    *,
    config: Callable[[Any], dict[str, Any] | None],
    build: Callable[[dict[str, Any]], Any] | None = None,
) -> None:
    """Teach `lagrax.save` and `lagrax.load` to rebuild a class of models unaided.

    `save` writes `config(model)`, the settings a model was built with, into the
    file's header; `load` calls `build(config)` for a model of the same structure
    and fills it with the file's parameters. `build` runs under
    `eqx.filter_eval_shape`: it computes nothing, so its parameter values (and the
    PRNG key it uses) do not matter. An unregistered model is saved all the same
    and loads with `lagrax.load(path, like=...)`.

    A file's settings are untrusted: `load` refuses to build from a `config` that
    holds an integer above 2**20 (a `depth` above 2**10), anywhere in it, and says
    to pass `like=` for such a model.

    Registering a class again replaces its entry. The registry lives in the
    process: register in the program that loads as in the one that saves (next to
    the class's definition, say). lagrax registers `MLPLagrangian`,
    `MechanicalLagrangian`, `GraphLagrangian`, `NeuralODEBaseline`,
    `MessagePassingBaseline`, the learned and parametric forces
    (`RayleighDissipation`, `CoulombFriction`, `LearnedDissipation`, `MLPForce`),
    `HamiltonianNN` (without a momentum map: `config` gives `None` for one with)
    and the systems of `lagrax.systems`.

    **Arguments:**

    - `cls`: the class, recorded in files as `module:qualname`.
    - `config`: a function `model -> dict` of JSON-able constructor settings
        (numbers, strings, lists, string-keyed dicts), or `None` for an instance
        that settings cannot describe (a custom activation, say), which then loads
        with `like=` only.
    - `build`: a function `config -> model`; defaults to `cls(**config)`.

    **Returns:**

    Nothing.

    !!! example

        ```python
        class Springs(lagrax.AbstractLagrangian):
            stiffness: Float[Array, " dof"]
            dof: int = eqx.field(static=True)

            def __init__(self, dof: int, *, key: PRNGKeyArray):
                self.stiffness = jr.uniform(key, (dof,))
                self.dof = dof

            def __call__(self, q, qdot):
                return 0.5 * jnp.sum(qdot**2 - self.stiffness * q**2)

        lagrax.register_model(
            Springs,
            config=lambda model: dict(dof=model.dof),
            build=lambda config: Springs(config["dof"], key=jr.key(0)),
        )
        lagrax.save("springs.lagrax", Springs(3, key=jr.key(1)))
        springs = lagrax.load("springs.lagrax")
        ```
    """
    if not isinstance(cls, type):
        raise TypeError(f"`cls` must be a class, got {cls!r}.")
    if not callable(config):
        raise TypeError(f"`config` must be a function model -> dict, got {config!r}.")
    if build is not None and not callable(build):
        raise TypeError(f"`build` must be a function dict -> model, got {build!r}.")
    _REGISTRY[_class_name(cls)] = _Entry(cls, config, build)


def _describe(leaf: Any) -> str:
    """A description of a leaf that is the same in every process: what `like` must
    agree with the file on. The values of arrays and numbers are saved, so only
    their kind enters it; a function (which is not saved) is described by what it
    is, `UNVERIFIABLE` and the reason where that cannot be told."""
    if isinstance(leaf, (jax.Array, np.ndarray, jax.ShapeDtypeStruct)):
        return f"{leaf.dtype}{list(leaf.shape)}"
    if eqx.is_array_like(leaf):  # a Python or NumPy number: its value is saved
        return f"{type(leaf).__module__}.{type(leaf).__qualname__}"
    return describe(leaf)


def _structure(tree: PyTree) -> dict[str, Any]:
    """The static structure of `tree`, in the JSON form the header stores."""
    leaves, treedef = jtu.tree_flatten_with_path(tree)
    return dict(
        treedef=_ADDRESS.sub("", str(treedef)),
        leaves=[[jtu.keystr(path), _describe(leaf)] for path, leaf in leaves],
    )


def _difference(saved: dict[str, Any], ours: dict[str, Any], other: str) -> str:
    """Where two structures first differ, in words."""
    a, b = saved["treedef"], ours["treedef"]
    if a != b:
        i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
        window = slice(max(0, i - 40), i + 40)
        return (
            f"their static structures differ, `…{a[window]}…` in the file and "
            f"`…{b[window]}…` in {other}"
        )
    for (path, x), (_, y) in zip(saved["leaves"], ours["leaves"]):
        if x != y:
            return f"at `{path}` the file holds {x} where {other} has {y}"
    counts = len(saved["leaves"]), len(ours["leaves"])
    return f"the file describes {counts[0]} leaves where {other} has {counts[1]}"


def _array_bytes(description: str) -> int:
    """The bytes of data of the array that a leaf's `description` describes (one per
    element for a dtype NumPy does not know, a PRNG key say); 0 for another leaf."""
    match = _ARRAY.fullmatch(description)
    if match is None:
        return 0
    dtype, shape = match.groups()
    try:
        itemsize = np.dtype(jnp.dtype(dtype)).itemsize
    except TypeError:
        itemsize = 1
    return math.prod(int(n) for n in shape.split(",") if n.strip()) * itemsize


def _saved_structure(header: dict[str, Any], payload: bytes, where: str) -> dict:
    """The header's `structure`, checked to be well formed and to describe no more
    array data than `payload` holds: before anything is built to its measure."""
    structure = _field(header, "structure", dict, where)
    leaves = structure.get("leaves")
    if not (
        isinstance(structure.get("treedef"), str)
        and isinstance(leaves, list)
        and all(
            isinstance(leaf, list)
            and len(leaf) == 2
            and all(isinstance(s, str) for s in leaf)
            for leaf in leaves
        )
    ):
        raise ValueError(f"{where} is malformed: its header's `structure` is garbled.")
    described = sum(_array_bytes(description) for _, description in leaves)
    if described > len(payload):
        raise ValueError(
            f"{where} is malformed: its header's `structure` describes arrays of "
            f"{described} bytes, and it holds {len(payload)} bytes of parameters."
        )
    return structure


def _check_structure(
    structure: dict[str, Any],
    like: PyTree,
    where: str,
    what: str,
    other: str,
    explanation: str | None = None,
) -> None:
    """Raise unless `like` (`what`, `other` for short) has the `structure` the file
    records, and every function in either can be told apart from another; the
    message gives `explanation` if there is one, else where the structures
    differ."""
    ours = _structure(like)
    for source, leaves in ((other, ours["leaves"]), ("the file", structure["leaves"])):
        for path, description in leaves:
            if description.startswith(UNVERIFIABLE):
                raise ValueError(
                    f"{where} cannot be checked against {what}: {source}'s "
                    f"`{path}` cannot be told apart from another function, as "
                    f"{description.removeprefix(UNVERIFIABLE)}. Use a function "
                    "defined at the top level of a module (or a `functools.partial` "
                    "of one, with numbers, strings or arrays as its arguments)."
                )
    if structure != ours:
        raise ValueError(
            f"{where} does not match {what}: "
            f"{explanation or _difference(structure, ours, other)}."
        )


def _field(header: dict[str, Any], name: str, kind: type | tuple, where: str) -> Any:
    """`header[name]`, with a `ValueError` unless it is of type `kind`."""
    value = header.get(name)
    if not isinstance(value, kind):
        raise ValueError(
            f"{where} is malformed: its header's `{name}` is a {type(value).__name__}."
        )
    return value


def _write(path: str | os.PathLike, header: dict[str, Any], tree: PyTree) -> None:
    """Write atomically, with `write_atomic`: a crash mid-write leaves the previous
    file intact."""
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, tree)
    payload = buffer.getvalue()
    encoded = json.dumps(dict(header, payload_bytes=len(payload))).encode("utf-8")
    digest = hashlib.sha256(encoded)
    digest.update(payload)
    length = len(encoded).to_bytes(8, "big")
    write_atomic(path, b"".join((MAGIC, length, digest.digest(), encoded, payload)))


def _read(path: str | os.PathLike) -> tuple[dict[str, Any], bytes]:
    """`(header, payload)`, with a clear `ValueError` for anything malformed."""
    raw = pathlib.Path(path).read_bytes()
    where = f"{os.fspath(path)!r}"
    if len(raw) < len(MAGIC) and MAGIC.startswith(raw):
        raise ValueError(f"{where} is truncated to {len(raw)} bytes.")
    if not raw.startswith(_SIGNATURE):
        raise ValueError(
            f"{where} is not a lagrax file (it does not start with the lagrax "
            "signature)."
        )
    version = raw[len(_SIGNATURE)]
    if version != MAGIC[-1]:
        advice = (
            "a newer lagrax wrote it"
            if version > MAGIC[-1]
            else "an earlier lagrax wrote it; load it with that one and save it "
            "again (or delete a checkpoint and train afresh)"
        )
        raise ValueError(
            f"{where} is in lagrax file format {version}; this lagrax reads format "
            f"{MAGIC[-1]} only: {advice}."
        )
    if len(raw) < _START:
        raise ValueError(f"{where} is truncated: its header is cut short.")
    end = _START + int.from_bytes(raw[len(MAGIC) : _START - 32], "big")
    if end > len(raw):
        raise ValueError(
            f"{where} is corrupt or truncated: its header should take "
            f"{end - _START} bytes, and {len(raw) - _START} follow."
        )
    if hashlib.sha256(raw[_START:]).digest() != raw[_START - 32 : _START]:
        raise ValueError(
            f"{where} is corrupt or truncated: its contents fail their checksum."
        )
    # From here on the bytes are those written, by `_write` or by anyone else: the
    # digest has no key. The header is checked as untrusted input.
    try:
        header = json.loads(raw[_START:end].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{where} is malformed: its header is not JSON ({e}).") from e
    if not isinstance(header, dict):
        raise ValueError(f"{where} is malformed: its header is not a JSON object.")
    if _field(header, "payload_bytes", int, where) != len(raw) - end:
        raise ValueError(
            f"{where} is malformed: it should hold {header['payload_bytes']} bytes "
            f"of parameters, it holds {len(raw) - end}."
        )
    return header, raw[end:]


# NumPy's readers of the array headers `np.save` writes (3.0 is for field names
# beyond Latin-1, which no leaf has).
_NPY_HEADERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def _check_array_header(f: io.BytesIO, leaf: Any) -> None:
    """Raise unless the array saved at the position of `f` has the shape of `leaf`
    (and its dtype, for an array: a number's depends on JAX's x64 setting when it
    was saved) and its data lies in `f`. `np.load` allocates what an array's header
    says before it reads a byte of data."""
    start = f.tell()
    end = f.seek(0, io.SEEK_END)
    f.seek(start)
    reader = _NPY_HEADERS.get(np.lib.format.read_magic(f))
    if reader is None:
        raise ValueError(f"the array at byte {start} is in an unknown NumPy format")
    shape, _, dtype = reader(f)
    data = math.prod(shape) * dtype.itemsize
    f.seek(start)
    arrays = (jax.Array, np.ndarray, jax.ShapeDtypeStruct)
    want_shape = np.shape(leaf)
    want_dtype = leaf.dtype if isinstance(leaf, arrays) else dtype
    # bfloat16 and kin are saved as raw bytes of their size.
    raw = dtype.kind == "V" and dtype.itemsize == jnp.dtype(want_dtype).itemsize
    if shape != want_shape or not (dtype == want_dtype or raw):
        raise ValueError(
            f"it holds an array of shape {shape} {dtype} where one of shape "
            f"{want_shape} {want_dtype} belongs"
        )
    if data > end - start:
        raise ValueError(
            f"its array at byte {start} should hold {data} bytes, and "
            f"{end - start} are left"
        )


def _read_leaf(f: Any, leaf: Any) -> Any:
    """`eqx.default_deserialise_filter_spec` without `jnp.load`, whose `asarray`
    compiles a conversion for every new shape: loading compiles nothing. Each
    array's header is checked against `leaf` before its data is read."""
    if isinstance(leaf, jax.ShapeDtypeStruct) or eqx.is_array_like(leaf):
        _check_array_header(f, leaf)
    if isinstance(leaf, (jax.Array, jax.ShapeDtypeStruct)):
        array = np.load(f, allow_pickle=False)
        if array.dtype.kind == "V":  # bfloat16 and kin are saved as raw bytes
            array = array.view(leaf.dtype)
        return jax.device_put(array)
    return eqx.default_deserialise_filter_spec(f, leaf)


def _deserialise(payload: bytes, like: PyTree, where: str, what: str) -> PyTree:
    """Load `payload` into the structure of `like`, checking every array's shape and
    dtype before reading it."""
    stream = io.BytesIO(payload)
    try:
        tree = eqx.tree_deserialise_leaves(stream, like, filter_spec=_read_leaf)
    except Exception as e:
        # Equinox says at which leaf, in an exception raised from ours: say both.
        cause = e
        while cause.__cause__ is not None:
            cause = cause.__cause__
        reason = str(e) if cause is e else f"{e}: {cause}"
        raise ValueError(f"{where} does not match {what} ({reason}).") from e
    if stream.tell() != len(payload):
        raise ValueError(f"{where} holds more arrays than {what}.")
    return tree


def _check_settings(config: dict[str, Any], name: str, where: str) -> None:
    """Raise unless every integer in `config`, however nested, is within
    `_MAX_SETTING` (a `depth` within `_MAX_DEPTH`): before anything is built."""
    # A worklist, not recursion: JSON nests as deep as the stack goes.
    pending: list[tuple[str, Any]] = list(config.items())
    for setting, value in pending:  # the loop takes in what it appends
        if isinstance(value, dict):
            pending += [(f"{setting}.{k}", v) for k, v in value.items()]
        elif isinstance(value, list):
            pending += [(f"{setting}[{i}]", v) for i, v in enumerate(value)]
        elif isinstance(value, int) and not isinstance(value, bool):
            cap = _MAX_DEPTH if setting == "depth" else _MAX_SETTING
            if abs(value) > cap:
                raise ValueError(
                    f"{where} holds a `{name}` whose setting `{setting}` is {value}, "
                    f"beyond the {cap} that `lagrax.load` builds a model from "
                    "unaided (a file's settings are not trusted). For a larger "
                    "model, build it and pass it as `like=`."
                )


def _config(model: Any) -> dict[str, Any] | None:
    """The settings of `model` that its registration gives, checked to be JSON."""
    name = _class_name(type(model))
    entry = _REGISTRY.get(name)
    config = None if entry is None else entry.config(model)
    if config is None:
        return None
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        raise TypeError(
            f"The `config` registered for `{name}` must return a dict with string "
            f"keys or None, got {config!r}."
        )
    try:
        return json.loads(json.dumps(config))
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"The `config` registered for `{name}` returned {config!r}, which is not "
            f"JSON-able ({e})."
        ) from e


def _config_difference(config: dict[str, Any] | None, like: Any) -> str | None:
    """The registered settings in which `like` differs from the file, in words."""
    ours = _config(like)
    if config is None or ours is None:
        return None
    differing = [
        f"its {key} is {config.get(key)!r} where `like`'s is {ours.get(key)!r}"
        for key in sorted(set(config) | set(ours))
        if config.get(key) != ours.get(key)
    ]
    return "; ".join(differing) or None


def save(path: str | os.PathLike, model: PyTree) -> None:
    """Save a model: its parameters and what is needed to rebuild it.

    Parameters are written with `eqx.tree_serialise_leaves`, after a JSON header
    holding the model's class, its structure, and the settings of a class
    registered with `lagrax.register_model` (as lagrax's own models are), which let
    `lagrax.load(path)` rebuild it unaided. Any other model is saved too, and loads
    with `lagrax.load(path, like=...)`. The write is atomic (a temporary file, then
    a rename), the file gets the permissions the umask gives, and a SHA-256 digest
    covers everything in it.

    **Arguments:**

    - `path`: the file to write; its folder must exist.
    - `model`: the model, any pytree.

    **Returns:**

    Nothing.

    **Raises:**

    `TypeError` if the registered `config` returns something other than a
    JSON-able dict or None; `OSError` (`FileNotFoundError` for a missing folder)
    naming `path` if it cannot be written.
    """
    header = dict(
        kind="model",
        model=_class_name(type(model)),
        config=_config(model),
        structure=_structure(model),
    )
    _write(path, header, model)


def load(path: str | os.PathLike, *, like: PyTree | None = None) -> PyTree:
    """Load a model written by `lagrax.save`.

    Without `like`, the model's class must be registered with
    `lagrax.register_model` (lagrax's own models are); its structure is rebuilt
    under `eqx.filter_eval_shape` and filled with the file's parameters, so loading
    computes and compiles nothing.

    A file is untrusted input (its SHA-256 digest has no key: it detects damage,
    not tampering). Every size and count in it is checked against the file's
    length before anything is allocated or built, so a small file cannot make
    `load` take much memory: in particular, a model is rebuilt from settings only
    if none of their integers exceeds 2**20 (no `depth` exceeds 2**10). A larger
    model, such as a `lagrax.systems.Wave1D` of more than 2**20 nodes, whose file
    holds little but its settings, loads with `like=`.

    Functions, which are not saved, are compared by what they are: a function
    defined at the top level of a module by its name, any other (a lambda, a local
    function, a `functools.partial`) by its code and the values it holds. A
    function holding a value that cannot be described the same way in every
    process (an object whose repr is its memory address) cannot be told apart from
    another, and a `like` holding one is refused.

    **Arguments:**

    - `path`: the file.
    - `like`: a model of the same class and structure (the same static fields,
        functions such as the activation, and array shapes and dtypes; any array
        values), needed for a model `save` could not describe by registered
        settings, or one too large to rebuild from them.

    **Returns:**

    The model.

    **Raises:**

    `ValueError` naming the file and the reason if it is not a lagrax model file,
    is in another format (format 1, whose header had no checksum, is no longer
    read), is truncated, corrupt or malformed, holds a class that is not registered
    or settings beyond the limits above (and no `like` is given), or does not match
    `like` (or holds a function `like`'s cannot be told apart from).
    """
    header, payload = _read(path)
    where = f"{os.fspath(path)!r}"
    kind = _field(header, "kind", str, where)
    if kind != "model":
        raise ValueError(f"{where} is a {kind!r} file, not a saved model.")
    name = _field(header, "model", str, where)
    config = _field(header, "config", (dict, type(None)), where)
    structure = _saved_structure(header, payload, where)
    if like is not None:
        if _class_name(type(like)) != name:
            raise ValueError(
                f"{where} holds a `{name}`, but `like` is a "
                f"`{_class_name(type(like))}`."
            )
        explanation = _config_difference(config, like)
        _check_structure(structure, like, where, "`like`", "`like`", explanation)
        return _deserialise(payload, like, where, "`like`")
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ValueError(
            f"{where} holds a `{name}`, which is not registered in this program: "
            "call `lagrax.register_model` for its class before loading (as before "
            "saving), or pass a model of the same structure as `like=`."
        )
    if config is None:
        raise ValueError(
            f"{where} holds a `{name}` without settings to rebuild it from (its "
            "class was not registered when it was saved, or its `config` returned "
            "None: a custom activation or momentum map, say): pass a model of the "
            "same structure as `like=`."
        )
    _check_settings(config, name, where)
    try:
        like = eqx.filter_eval_shape(entry.rebuild, config)
    except Exception as e:
        raise ValueError(
            f"{where} holds a `{name}` that its registered `build` cannot rebuild "
            f"from the settings {config} ({type(e).__name__}: {e})."
        ) from e
    what = f"the `{name}` built from its settings"
    _check_structure(structure, like, where, what, "the model built")
    return _deserialise(payload, like, where, what)


def write_checkpoint(
    path: str | os.PathLike, state: PyTree, info: dict[str, Any]
) -> None:
    """Save `fit`'s state (model, optimizer state) and its JSON-able `info`."""
    _write(path, dict(kind="checkpoint", info=info, structure=_structure(state)), state)


def read_checkpoint(
    path: str | os.PathLike, like: PyTree
) -> tuple[PyTree, dict[str, Any]]:
    """Load a checkpoint written by `write_checkpoint` into the structure `like`."""
    header, payload = _read(path)
    where = f"{os.fspath(path)!r}"
    kind = _field(header, "kind", str, where)
    if kind != "checkpoint":
        raise ValueError(f"{where} is a {kind!r} file, not a checkpoint.")
    info = _field(header, "info", dict, where)
    structure = _saved_structure(header, payload, where)
    what = "the model and optimizer state of this run"
    _check_structure(structure, like, where, what, "this run")
    return _deserialise(payload, like, where, what), info


def key_fingerprint(key) -> list[int]:
    """The raw bits of a PRNG key, to recognise it in a checkpoint."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jr.key_data(key)
    return np.asarray(key).ravel().tolist()


# lagrax's own models. Activations are saved by name; a model with another one has
# no settings, and loads with `like=`.
_ACTIVATIONS = {
    "softplus": jax.nn.softplus,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "silu": jax.nn.silu,
    "gelu": jax.nn.gelu,
    "elu": jax.nn.elu,
    "relu": jax.nn.relu,
    "identity": eqx.nn.Identity(),
}


def _settings(activation: Callable, dtype: Any, **sizes: Any) -> dict[str, Any] | None:
    name = next((k for k, fn in _ACTIVATIONS.items() if fn is activation), None)
    return None if name is None else dict(sizes, activation=name, dtype=str(dtype))


def _builder(cls: type) -> Callable[[dict[str, Any]], Any]:
    def build(config: dict[str, Any]) -> Any:
        # Any key will do: under `eqx.filter_eval_shape` no parameter is computed.
        activation = _ACTIVATIONS[config["activation"]]
        dtype = jnp.dtype(config["dtype"])
        return cls(**dict(config, activation=activation, dtype=dtype, key=jr.key(0)))

    return build


def _mlp_lagrangian_config(model: MLPLagrangian) -> dict[str, Any] | None:
    first = model.layers[0]
    return _settings(
        model.activation,
        first.weight.dtype,
        dof=model.dof,
        width=first.out_features,
        depth=len(model.layers) - 1,
        angles=list(model.angles),
    )


def _mechanical_config(model: MechanicalLagrangian) -> dict[str, Any] | None:
    mlp = model.potential_mlp
    return _settings(
        mlp.activation,
        mlp.layers[0].weight.dtype,
        dof=model.dof,
        width=mlp.width_size,
        depth=mlp.depth,
        angles=list(model.angles),
        epsilon=model.epsilon,
    )


def _learned_force_config(model: LearnedDissipation | MLPForce) -> dict[str, Any]:
    mlp = model.mlp
    return dict(
        dof=model.dof,
        angles=list(model.angles),
        width=mlp.width_size,
        depth=mlp.depth,
        dtype=str(mlp.layers[0].weight.dtype),
    )


def _learned_force_builder(cls: type) -> Callable[[dict[str, Any]], Any]:
    def build(config: dict[str, Any]) -> Any:
        return cls(**dict(config, dtype=jnp.dtype(config["dtype"]), key=jr.key(0)))

    return build


def _vector_config(name: str) -> Callable[[Any], dict[str, Any]]:
    def config(force: Any) -> dict[str, Any]:
        leaf = getattr(force, name)
        extra = {"sharpness": force.sharpness} if name == "coefficient" else {}
        return dict(dof=leaf.shape[0], dtype=str(leaf.dtype), **extra)

    return config


def _build_rayleigh(config: dict[str, Any]) -> RayleighDissipation:
    return RayleighDissipation(np.zeros(config["dof"]), dtype=config["dtype"])


def _build_coulomb(config: dict[str, Any]) -> CoulombFriction:
    return CoulombFriction(
        np.zeros(config["dof"]), sharpness=config["sharpness"], dtype=config["dtype"]
    )


def _parameters_config(system: eqx.Module) -> dict[str, Any]:
    return {f.name: float(getattr(system, f.name)) for f in dataclasses.fields(system)}


def _neural_ode_config(model: NeuralODEBaseline) -> dict[str, Any] | None:
    mlp = model.mlp
    return _settings(
        mlp.activation,
        mlp.layers[0].weight.dtype,
        dof=model.dof,
        width=mlp.width_size,
        depth=mlp.depth,
        angles=list(model.angles),
    )


def _hamiltonian_config(model: HamiltonianNN) -> dict[str, Any] | None:
    if model.momentum is not None:  # a function, which settings cannot name
        return None
    mlp = model.mlp
    return _settings(
        mlp.activation,
        mlp.layers[0].weight.dtype,
        dof=model.dof,
        width=mlp.width_size,
        depth=mlp.depth,
    )


def _graph_config(model) -> dict[str, Any]:
    graph = model.graph
    return dict(
        senders=graph.senders.tolist(),
        receivers=graph.receivers.tolist(),
        num_nodes=graph.num_nodes,
    )


def _graph_lagrangian_config(model: GraphLagrangian) -> dict[str, Any] | None:
    first = model.node_layers[0]
    return _settings(
        model.activation,
        first.weight.dtype,
        **_graph_config(model),
        node_dim=model.node_dim,
        width=first.out_features,
        depth=len(model.node_layers) - 1,
        translation_invariant=model.translation_invariant,
        edge_velocities=model.edge_velocities,
    )


def _message_passing_config(model: MessagePassingBaseline) -> dict[str, Any] | None:
    mlp = model.edge_mlp
    return _settings(
        mlp.activation,
        mlp.layers[0].weight.dtype,
        **_graph_config(model),
        node_dim=model.node_dim,
        width=mlp.width_size,
        depth=mlp.depth,
        message_dim=model.message_dim,
        translation_invariant=model.translation_invariant,
    )


def _wave_config(system: systems.Wave1D) -> dict[str, Any]:
    return dict(
        num_nodes=system.num_nodes, length=system.length, wave_speed=system.wave_speed
    )


def _build_wave(config: dict[str, Any]) -> systems.Wave1D:
    return systems.Wave1D(
        config["num_nodes"], length=config["length"], wave_speed=config["wave_speed"]
    )


def _springs_config(system: systems.SpringNetwork) -> dict[str, Any]:
    return dict(
        **_graph_config(system),
        gravity=system.gravity,
        has_reference=system.reference is not None,
    )


def _build_springs(config: dict[str, Any]) -> systems.SpringNetwork:
    # The masses, stiffnesses, rest lengths and reference are leaves: the file's.
    config = dict(config)
    has_reference = config.pop("has_reference")
    reference = np.zeros(2 * config["num_nodes"]) if has_reference else None
    return systems.SpringNetwork(**config, reference=reference)


def _chain_config(system: systems.ChainPendulum) -> dict[str, Any]:
    return dict(
        masses=system.masses.tolist(),
        lengths=system.lengths.tolist(),
        g=system.g,
        coordinates=system.coordinates,
    )


def _fields_config(system: eqx.Module) -> dict[str, Any] | None:
    fields = {f.name: getattr(system, f.name) for f in dataclasses.fields(system)}
    try:
        json.dumps(fields)
    except (TypeError, ValueError):
        return None
    return fields


register_model(
    MLPLagrangian, config=_mlp_lagrangian_config, build=_builder(MLPLagrangian)
)
register_model(
    NeuralODEBaseline, config=_neural_ode_config, build=_builder(NeuralODEBaseline)
)
register_model(HamiltonianNN, config=_hamiltonian_config, build=_builder(HamiltonianNN))
register_model(
    GraphLagrangian,
    config=_graph_lagrangian_config,
    build=_builder(GraphLagrangian),
)
register_model(
    MessagePassingBaseline,
    config=_message_passing_config,
    build=_builder(MessagePassingBaseline),
)
register_model(
    MechanicalLagrangian,
    config=_mechanical_config,
    build=_builder(MechanicalLagrangian),
)
for _force in (LearnedDissipation, MLPForce):
    register_model(
        _force, config=_learned_force_config, build=_learned_force_builder(_force)
    )
register_model(
    RayleighDissipation, config=_vector_config("factor"), build=_build_rayleigh
)
register_model(
    CoulombFriction, config=_vector_config("coefficient"), build=_build_coulomb
)
register_model(systems.ActuatedDoublePendulum, config=_parameters_config)
register_model(systems.Wave1D, config=_wave_config, build=_build_wave)
register_model(systems.SpringNetwork, config=_springs_config, build=_build_springs)
register_model(systems.ChainPendulum, config=_chain_config)
for _system in (
    systems.ChargedParticle,
    systems.DoublePendulum,
    systems.HarmonicOscillator,
    systems.Pendulum,
    systems.RelativisticParticle,
):
    register_model(_system, config=_fields_config)
