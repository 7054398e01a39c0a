from collections.abc import Callable

import numpy as np
from jaxtyping import Array, Bool, Float


# States: JAX arrays, or NumPy arrays at the public entry points (cast there as
# `jnp.asarray` casts them).
Position = Float[Array | np.ndarray, " dof"]
Velocity = Float[Array | np.ndarray, " dof"]
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
