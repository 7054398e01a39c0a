import equinox as eqx
from jaxtyping import Array, Float

from .._lagrangian import AbstractLagrangian
from .._misc import check_dof, real


class RelativisticParticle(AbstractLagrangian):
    r"""The relativistic particle in a uniform potential of Cranmer et al. (one
    degree of freedom, `c = m = 1`):

        L = (1 − q̇²)^(−1/2) − 1 + g q

    Its canonical momentum `p = ∂L/∂q̇ = q̇ (1 − q̇²)^(−3/2)` is far from `q̇` near
    the speed of light, which is what makes a Hamiltonian network given `p := q̇`
    fail. The mass matrix is `(1 + 2q̇²)(1 − q̇²)^(−5/2)` and the equation of motion
    `q̈ = g (1 − q̇²)^(5/2) / (1 + 2q̇²)`. Defined for `|q̇| < 1`.

    **Fields:**

    - `g`: strength of the uniform potential.
    """

    g: float = eqx.field(default=1.0, converter=real("g"))

    def __call__(
        self, q: Float[Array, "1"], qdot: Float[Array, "1"]
    ) -> Float[Array, ""]:
        check_dof(q, qdot, 1, "RelativisticParticle")
        return (1 - qdot[0] ** 2) ** -0.5 - 1 + self.g * q[0]
