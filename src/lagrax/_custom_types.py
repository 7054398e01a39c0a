from collections.abc import Callable

import numpy as np
from jaxtyping import Array, Bool, Float


# One state, as Lagrangians, terms and solvers see it: JAX arrays.
Position = Float[Array, " dof"]
Velocity = Float[Array, " dof"]
# One state as the public entry points take it: JAX or NumPy arrays, cast there as
# `jnp.asarray` casts them (`lagrax._misc.as_state`).
PositionLike = Float[Array | np.ndarray, " dof"]
VelocityLike = Float[Array | np.ndarray, " dof"]
Acceleration = Float[Array, " dof"]
Scalar = Float[Array, ""]
BoolScalar = Bool[Array, ""]
MassMatrix = Float[Array, "dof dof"]
# A batch of states (leading axis), the input directions of a `batch_jet`, and what
# it returns: `∇L` and `Uᵀ∇²L U` per state.
BatchStates = Float[Array, "batch dof"]
BatchDirections = Float[Array, "batch 2*dof k"]
BatchJet = tuple[Float[Array, "batch 2*dof"], Float[Array, "batch k k"]]

#: Anything that maps one state `(q, qdot)` to the scalar Lagrangian `L(q, qdot)`:
#: an `AbstractLagrangian`, or a plain function.
LagrangianLike = Callable[[Position, Velocity], Scalar]
#: A generalized (non-conservative) force `Q(t, q, qdot)`.
ForceFn = Callable[[Float[Array, ""], Position, Velocity], Float[Array, " dof"]]
