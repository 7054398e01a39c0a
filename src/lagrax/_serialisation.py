"""Saving and loading models (and `fit`'s checkpoints) as self-describing files.

A file is `MAGIC`, an 8-byte big-endian header length, a UTF-8 JSON header and the
payload written by `eqx.tree_serialise_leaves`. The header records the payload's
length and SHA-256, so a truncated or corrupted file is recognised before any
parameter is read, and (for models) the class and hyperparameters that rebuild the
model's structure without the user's help.
"""

import dataclasses
import hashlib
import io
import json
import os
import pathlib
import tempfile
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
from jaxtyping import PyTree

from . import systems
from ._baselines import HamiltonianNN, NeuralODEBaseline
from ._lagrangian import MLPLagrangian


MAGIC = b"LAGRAX\x00\x01"
_VERSION = 1

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


def _activation_name(fn) -> str | None:
    for name, known in _ACTIVATIONS.items():
        if fn is known:
            return name
    return None


def _mlp_hyperparameters(model) -> dict[str, Any] | None:
    mlp = model.mlp
    activation = _activation_name(mlp.activation)
    if activation is None:
        return None
    return dict(
        dof=model.dof,
        width=mlp.width_size,
        depth=mlp.depth,
        activation=activation,
        dtype=str(mlp.layers[0].weight.dtype),
    )


def _hyperparameters(model) -> tuple[str, dict[str, Any] | None]:
    """`(class name, constructor arguments)`; arguments are None when the model
    holds something (a custom activation, a momentum map) that a name cannot
    rebuild."""
    if isinstance(model, MLPLagrangian):
        activation = _activation_name(model.activation)
        if activation is None:
            return "MLPLagrangian", None
        return "MLPLagrangian", dict(
            dof=model.dof,
            width=model.layers[0].out_features,
            depth=len(model.layers) - 1,
            activation=activation,
            angles=list(model.angles),
            dtype=str(model.layers[0].weight.dtype),
        )
    if isinstance(model, NeuralODEBaseline):
        hyperparameters = _mlp_hyperparameters(model)
        if hyperparameters is not None:
            hyperparameters["angles"] = list(model.angles)
        return "NeuralODEBaseline", hyperparameters
    if isinstance(model, HamiltonianNN):
        if model.momentum is not None:
            return "HamiltonianNN", None
        return "HamiltonianNN", _mlp_hyperparameters(model)
    name = type(model).__name__
    if getattr(systems, name, None) is type(model):
        fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)}
        try:
            json.dumps(fields)
        except TypeError:
            return f"systems.{name}", None
        return f"systems.{name}", fields
    return f"{type(model).__module__}.{type(model).__qualname__}", None


def _rebuild(class_name: str, hyperparameters: dict[str, Any]):
    key = jr.key(0)  # any key: every parameter is overwritten by the file's
    if class_name in ("MLPLagrangian", "NeuralODEBaseline", "HamiltonianNN"):
        kwargs = dict(hyperparameters)
        kwargs["activation"] = _ACTIVATIONS[kwargs["activation"]]
        kwargs["dtype"] = jnp.dtype(kwargs["dtype"])
        dof = kwargs.pop("dof")
        if class_name == "MLPLagrangian":
            return MLPLagrangian(dof, init="default", key=key, **kwargs)
        cls = NeuralODEBaseline if class_name == "NeuralODEBaseline" else HamiltonianNN
        return cls(dof, key=key, **kwargs)
    return getattr(systems, class_name.removeprefix("systems."))(**hyperparameters)


def _write(path, header: dict[str, Any], tree: PyTree) -> None:
    """Write atomically: a temporary file in the same folder, then `os.replace`, so
    a crash mid-write leaves the previous file intact."""
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, tree)
    payload = buffer.getvalue()
    header = dict(
        header,
        format="lagrax",
        version=_VERSION,
        payload_bytes=len(payload),
        payload_sha256=hashlib.sha256(payload).hexdigest(),
    )
    encoded = json.dumps(header).encode("utf-8")
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC)
            f.write(len(encoded).to_bytes(8, "big"))
            f.write(encoded)
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def _read(path) -> tuple[dict[str, Any], bytes]:
    """`(header, payload)`, with a clear `ValueError` for anything malformed."""
    raw = pathlib.Path(path).read_bytes()
    where = f"{os.fspath(path)!r}"
    if not raw.startswith(MAGIC):
        raise ValueError(
            f"{where} is not a lagrax file (it does not start with the "
            "lagrax signature), or it is truncated to nothing."
        )
    start = len(MAGIC) + 8
    if len(raw) < start:
        raise ValueError(f"{where} is truncated: its header is cut short.")
    length = int.from_bytes(raw[len(MAGIC) : start], "big")
    if len(raw) < start + length:
        raise ValueError(
            f"{where} is truncated: its header needs {length} bytes, "
            f"{len(raw) - start} are present."
        )
    try:
        header = json.loads(raw[start : start + length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(
            f"{where} is corrupt: its header is not valid JSON ({e})."
        ) from None
    if header.get("version") != _VERSION:
        raise ValueError(
            f"{where} has format version {header.get('version')!r}; this lagrax "
            f"reads version {_VERSION}."
        )
    payload = raw[start + length :]
    if len(payload) != header["payload_bytes"]:
        raise ValueError(
            f"{where} is truncated or padded: it should hold "
            f"{header['payload_bytes']} bytes of parameters, it holds {len(payload)}."
        )
    if hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
        raise ValueError(f"{where} is corrupt: its parameters fail their checksum.")
    return header, payload


def _deserialise(
    payload: bytes, like: PyTree, where: str, what: str = "the model"
) -> PyTree:
    """Load `payload` into the structure of `like`, checking every array."""
    stream = io.BytesIO(payload)
    try:
        tree = eqx.tree_deserialise_leaves(stream, like)
    except Exception as e:
        raise ValueError(
            f"{where} does not match {what} it is loaded into ({e})."
        ) from None
    if stream.tell() != len(payload):
        raise ValueError(f"{where} holds more arrays than {what} it is loaded into.")
    for new, old in zip(jtu.tree_leaves(tree), jtu.tree_leaves(like)):
        if eqx.is_array(old) and (new.shape != old.shape or new.dtype != old.dtype):
            raise ValueError(
                f"{where} does not match {what} it is loaded into: it holds an "
                f"array of shape {new.shape} {new.dtype} where the model has "
                f"{old.shape} {old.dtype}."
            )
    return tree


def save(path: str | os.PathLike, model: PyTree) -> None:
    """Save a model: its parameters and what is needed to rebuild it.

    Parameters are written with `eqx.tree_serialise_leaves`; the class and
    hyperparameters (sizes, activation, dtype) of an `MLPLagrangian`,
    `NeuralODEBaseline`, `HamiltonianNN` or `lagrax.systems` system go into a JSON
    header, so `lagrax.load(path)` rebuilds it alone. Any other model (or one with
    a custom activation, or a `HamiltonianNN` with a momentum map) is saved too,
    and loads with `lagrax.load(path, like=...)`. The write is atomic (a temporary
    file, then a rename) and the file carries a checksum.

    **Arguments:**

    - `path`: the file to write.
    - `model`: the model, a pytree.

    **Returns:**

    Nothing.
    """
    class_name, hyperparameters = _hyperparameters(model)
    header = dict(kind="model", model=class_name, hyperparameters=hyperparameters)
    _write(path, header, model)


def load(path: str | os.PathLike, *, like: PyTree | None = None) -> PyTree:
    """Load a model written by `lagrax.save`.

    **Arguments:**

    - `path`: the file.
    - `like`: a model of the same class and sizes (any parameter values), needed
        only for models that `save` could not describe by hyperparameters.

    **Returns:**

    The model.

    **Raises:**

    `ValueError` with the reason if the file is not a lagrax model file, is
    truncated or corrupt, or does not match `like`.
    """
    header, payload = _read(path)
    where = f"{os.fspath(path)!r}"
    if header.get("kind") != "model":
        raise ValueError(
            f"{where} is a {header.get('kind')!r} file, not a saved model."
        )
    class_name = header["model"]
    if like is None:
        if header["hyperparameters"] is None:
            raise ValueError(
                f"{where} holds a {class_name} that lagrax cannot rebuild by itself "
                "(a custom model, activation or momentum map): pass a model of the "
                "same structure as `like=`."
            )
        like = _rebuild(class_name, header["hyperparameters"])
    elif _hyperparameters(like)[0] != class_name:
        raise ValueError(
            f"{where} holds a {class_name}, but `like` is a {type(like).__name__}."
        )
    return _deserialise(payload, like, where)


def write_checkpoint(path, state: PyTree, info: dict[str, Any]) -> None:
    """Save `fit`'s state (model, optimizer state) and its JSON-able `info`."""
    _write(path, dict(kind="checkpoint", info=info), state)


def read_checkpoint(path, like: PyTree) -> tuple[PyTree, dict[str, Any]]:
    """Load a checkpoint written by `write_checkpoint` into the structure `like`."""
    header, payload = _read(path)
    where = f"{os.fspath(path)!r}"
    if header.get("kind") != "checkpoint":
        raise ValueError(f"{where} is a {header.get('kind')!r} file, not a checkpoint.")
    what = "the model and optimizer state of this run (same model and optimizer?)"
    return _deserialise(payload, like, where, what), header["info"]


def key_fingerprint(key) -> list[int]:
    """The raw bits of a PRNG key, to recognise it in a checkpoint."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jr.key_data(key)
    return np.asarray(key).ravel().tolist()
