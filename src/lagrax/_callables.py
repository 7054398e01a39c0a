"""Descriptions of functions, and of the values they hold, that are the same in
every process: what `lagrax.load(like=...)` and `fit`'s resume compare to tell two
activations, or two losses, apart.

A function that a module defines at its top level is described by its name,
`module.qualname`, once that name is checked to lead back to the very same object:
the module is its identity. Anything else (a lambda, a local function, a function
of `__main__`, a `functools.partial`, a bound method, a jitted function, an Equinox
module) is described by what it is: its name, a digest of its code, and the values
it holds (bound arguments, closure cells, defaults, the globals its code reads),
each described in turn. Two names alike never make two functions alike.

A value that has no such description (an object whose `repr` is its memory
address, a local class) makes the whole description `"unverifiable: <why>"`, which
callers refuse to compare rather than trust.
"""

import dataclasses
import functools as ft
import hashlib
import sys
import types
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


UNVERIFIABLE = "unverifiable: "
_JITTED = type(jax.jit(lambda x: x))  # JAX gives its type no public name


class _Unverifiable(Exception):
    pass


def qualified_name(obj: Any) -> str:
    """`module.qualname` of a function or class, or else of its type."""
    if not hasattr(obj, "__qualname__"):
        obj = type(obj)
    return f"{obj.__module__}.{obj.__qualname__}"


def _resolves(obj: Any) -> bool:
    """Whether `module.qualname` of `obj` leads, in its loaded module, back to `obj`
    itself. `__main__` does not count: another program's `__main__` is another
    module."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not (isinstance(module, str) and isinstance(qualname, str)):
        return False
    if module == "__main__" or "<" in qualname:  # `<lambda>`, `<locals>`
        return False
    # Only modules already loaded: describing a function never imports anything.
    found = sys.modules.get(module)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return found is obj


def _code_digest(code: types.CodeType) -> str:
    """A SHA-256 of what a code object does: bytecode, constants (nested code
    included), the names it reads and its arguments. Line numbers and file names do
    not enter it; another Python version's bytecode does."""
    digest = hashlib.sha256(code.co_code)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            text = _code_digest(const)
        elif isinstance(const, frozenset):  # iterated in an order that varies by run
            text = f"frozenset({sorted(map(repr, const))})"
        else:
            text = repr(const)
        digest.update(text.encode())
    for names in (code.co_names, code.co_varnames):
        digest.update(repr(names).encode())
    digest.update(repr((code.co_argcount, code.co_kwonlyargcount)).encode())
    return digest.hexdigest()[:16]


def _global_names(code: types.CodeType) -> list[str]:
    """The names that `code` and the code nested in it look up."""
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names += _global_names(const)
    return list(dict.fromkeys(names))


def _function(fn: types.FunctionType, seen: frozenset[int]) -> str:
    cells = []
    for cell in fn.__closure__ or ():
        try:
            cells.append(_describe(cell.cell_contents, seen))
        except ValueError:  # a closure variable not yet assigned
            cells.append("<empty>")
    defaults = [_describe(x, seen) for x in fn.__defaults__ or ()]
    defaults += [
        f"{k}={_describe(v, seen)}" for k, v in (fn.__kwdefaults__ or {}).items()
    ]
    reads = [
        f"{name}={_describe(fn.__globals__[name], seen)}"
        for name in _global_names(fn.__code__)
        if name in fn.__globals__
    ]
    bound = [
        f"{what}: {', '.join(values)}"
        for what, values in (
            ("cells", cells),
            ("defaults", defaults),
            ("globals", reads),
        )
        if values
    ]
    text = f"{qualified_name(fn)}#{_code_digest(fn.__code__)}"
    return f"{text}[{'; '.join(bound)}]" if bound else text


def _array(x: Any) -> str:
    dtype, shape = x.dtype, list(x.shape)
    if jnp.issubdtype(dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    x = np.asarray(x)
    # The values of a few numbers (a weight, say), a digest of anything more.
    if x.size <= 16:
        values = str(x.tolist())
    else:
        values = (
            "#" + hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()[:16]
        )
    return f"{dtype}{shape}{values}"


def _describe(obj: Any, seen: frozenset[int]) -> str:
    if obj is None or isinstance(obj, bool | int | float | complex | str | bytes):
        return repr(obj)
    if eqx.is_array(obj):
        return _array(obj)
    if isinstance(obj, types.ModuleType):
        return f"<module {obj.__name__}>"
    if _resolves(obj):  # a top-level function or class: its name is its identity
        return qualified_name(obj)
    if id(obj) in seen:  # a function whose closure holds itself, say
        return f"<recursive {qualified_name(obj)}>"
    seen = seen | {id(obj)}
    if isinstance(obj, tuple):
        return f"({', '.join(_describe(x, seen) for x in obj)})"
    if isinstance(obj, list):
        return f"[{', '.join(_describe(x, seen) for x in obj)}]"
    if isinstance(obj, set | frozenset):  # iterated in an order that varies by run
        return f"{{{', '.join(sorted(_describe(x, seen) for x in obj))}}}"
    if isinstance(obj, dict):
        items = (f"{k!r}: {_describe(v, seen)}" for k, v in obj.items())
        return f"{{{', '.join(items)}}}"
    if isinstance(obj, ft.partial):
        args = [_describe(x, seen) for x in obj.args]
        args += [f"{k}={_describe(v, seen)}" for k, v in obj.keywords.items()]
        return f"partial({', '.join([_describe(obj.func, seen), *args])})"
    if isinstance(obj, types.FunctionType):
        return _function(obj, seen)
    if isinstance(obj, types.MethodType):
        return f"{_describe(obj.__func__, seen)} of {_describe(obj.__self__, seen)}"
    if isinstance(obj, _JITTED):
        # `jax.jit` computes what the function it wraps computes.
        # `functools.wraps` sets `__wrapped__`; JAX's `JitWrapped` does not declare it.
        wrapped = obj.__wrapped__  # pyright: ignore[reportAttributeAccessIssue]
        return f"jit({_describe(wrapped, seen)})"
    if isinstance(obj, eqx.Module):
        fields = (
            f"{f.name}={_describe(getattr(obj, f.name), seen)}"
            for f in dataclasses.fields(obj)
        )
        return f"{qualified_name(type(obj))}({', '.join(fields)})"
    if isinstance(obj, type):
        raise _Unverifiable(f"it holds the class `{qualified_name(obj)}`, a local one")
    text = repr(obj)
    if " at 0x" in text:
        raise _Unverifiable(
            f"it holds a `{qualified_name(obj)}`, an object whose repr is its memory "
            "address"
        )
    return text


def describe(obj: Any) -> str:
    """A description of a function (or of any value it holds) that is the same in
    every process and tells apart what computes differently: see the module's
    docstring. It is `UNVERIFIABLE` followed by the reason where some value it holds
    cannot be described so. It never holds a memory address."""
    try:
        return _describe(obj, frozenset())
    except _Unverifiable as e:
        return f"{UNVERIFIABLE}{e}"
    except RecursionError:
        return f"{UNVERIFIABLE}it holds values nested too deeply to describe"
