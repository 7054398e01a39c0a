import importlib.metadata

from . import systems as systems
from ._lagrangian import (
    AbstractJetLagrangian as AbstractJetLagrangian,
    AbstractLagrangian as AbstractLagrangian,
    MLPLagrangian as MLPLagrangian,
)
from ._mechanics import (
    acceleration as acceleration,
    energy as energy,
    generalized_force as generalized_force,
    mass_matrix as mass_matrix,
    mass_matrix_info as mass_matrix_info,
    MassMatrixInfo as MassMatrixInfo,
    momentum as momentum,
)
from ._simulate import (
    LagrangianTerm as LagrangianTerm,
    simulate as simulate,
    Trajectory as Trajectory,
)
from ._solver.base import AbstractSymmetricSolver as AbstractSymmetricSolver
from ._solver.variational import VariationalMidpoint as VariationalMidpoint
from ._solver.verlet import VelocityVerlet as VelocityVerlet
from ._solver.yoshida import Yoshida4 as Yoshida4


__version__ = importlib.metadata.version("lagrax")
