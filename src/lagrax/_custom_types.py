from collections.abc import Callable

from jaxtyping import Array, Bool, Float


Position = Float[Array, " dof"]
Velocity = Float[Array, " dof"]
Acceleration = Float[Array, " dof"]
Scalar = Float[Array, ""]
BoolScalar = Bool[Array, ""]
MassMatrix = Float[Array, "dof dof"]

#: Anything that maps one state `(q, qdot)` to the scalar Lagrangian `L(q, qdot)`:
#: an `AbstractLagrangian`, or a plain function.
LagrangianLike = Callable[[Position, Velocity], Scalar]
#: A generalized (non-conservative) force `Q(t, q, qdot)`.
ForceFn = Callable[[Float[Array, ""], Position, Velocity], Float[Array, " dof"]]
