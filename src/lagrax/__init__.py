import importlib.metadata

from . import systems as systems
from ._adjoint import ReversibleAdjoint as ReversibleAdjoint
from ._baselines import (
    AbstractDynamics as AbstractDynamics,
    HamiltonianNN as HamiltonianNN,
    MessagePassingBaseline as MessagePassingBaseline,
    NeuralODEBaseline as NeuralODEBaseline,
)
from ._compare import (
    compare_solvers as compare_solvers,
    plot_work_precision as plot_work_precision,
    SolverRun as SolverRun,
    SolverSetting as SolverSetting,
)
from ._constraint import project_on_constraint as project_on_constraint
from ._force import (
    AbstractForce as AbstractForce,
    Actuation as Actuation,
    CoulombFriction as CoulombFriction,
    ForceSum as ForceSum,
    LearnedDissipation as LearnedDissipation,
    MLPForce as MLPForce,
    RayleighDissipation as RayleighDissipation,
    with_input as with_input,
)
from ._graph import BlockSparseMatrix as BlockSparseMatrix, Graph as Graph
from ._graph_constraint import EdgeConstraint as EdgeConstraint, rod as rod
from ._graph_lagrangian import (
    AbstractGraphLagrangian as AbstractGraphLagrangian,
    GraphLagrangian as GraphLagrangian,
)
from ._lagrangian import (
    AbstractJetLagrangian as AbstractJetLagrangian,
    AbstractLagrangian as AbstractLagrangian,
    LagrangianSum as LagrangianSum,
    MLPLagrangian as MLPLagrangian,
    Rescaled as Rescaled,
)
from ._linalg import PivotedLU as PivotedLU
from ._mechanical import (
    AbstractMechanicalLagrangian as AbstractMechanicalLagrangian,
    MechanicalLagrangian as MechanicalLagrangian,
)
from ._mechanics import (
    acceleration as acceleration,
    constraint_multipliers as constraint_multipliers,
    energy as energy,
    generalized_force as generalized_force,
    graph_mass_matrix as graph_mass_matrix,
    mass_matrix as mass_matrix,
    mass_matrix_info as mass_matrix_info,
    MassMatrixInfo as MassMatrixInfo,
    momentum as momentum,
)
from ._misc import cast as cast
from ._results import from_diffrax as from_diffrax, RESULTS as RESULTS
from ._serialisation import (
    load as load,
    register_model as register_model,
    save as save,
)
from ._simulate import simulate as simulate, Trajectory as Trajectory
from ._solver.base import (
    AbstractSymmetricSolver as AbstractSymmetricSolver,
    AbstractVariationalSolver as AbstractVariationalSolver,
)
from ._solver.gauss_legendre import GaussLegendre as GaussLegendre
from ._solver.rattle import Rattle as Rattle
from ._solver.unrolled import Unrolled as Unrolled
from ._solver.variational import VariationalMidpoint as VariationalMidpoint
from ._solver.verlet import VelocityVerlet as VelocityVerlet
from ._solver.yoshida import Yoshida4 as Yoshida4
from ._term import (
    AbstractSecondOrderTerm as AbstractSecondOrderTerm,
    DynamicsTerm as DynamicsTerm,
    LagrangianTerm as LagrangianTerm,
)
from ._train.data import (
    AbstractDataset as AbstractDataset,
    acceleration_data as acceleration_data,
    AccelerationData as AccelerationData,
    MixedData as MixedData,
    PositionData as PositionData,
    sample_states as sample_states,
    train_test_split as train_test_split,
    trajectory_data as trajectory_data,
    TrajectoryData as TrajectoryData,
)
from ._train.fit import fit as fit, History as History, train_step as train_step
from ._train.losses import (
    acceleration_loss as acceleration_loss,
    rollout_loss as rollout_loss,
)
from ._train.metrics import (
    acceleration_error as acceleration_error,
    energy_discrepancy as energy_discrepancy,
    energy_error as energy_error,
    integrated_log_rollout_error as integrated_log_rollout_error,
    rollout_error as rollout_error,
)
from ._train.recording import (
    horizon_rms as horizon_rms,
    load_recording as load_recording,
    Recording as Recording,
)
from ._train.residual_losses import (
    discrete_euler_lagrange_loss as discrete_euler_lagrange_loss,
    inverse_dynamics_loss as inverse_dynamics_loss,
)
from ._train.rollout import rollout as rollout


__version__ = importlib.metadata.version("lagrax")
