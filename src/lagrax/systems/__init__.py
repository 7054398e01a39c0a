"""Analytic Lagrangians with the true physics, for data, tests and benchmarks.

Their settings (masses, lengths, stiffnesses, gravity, ...) must be finite real
numbers: a string, a bool, an infinity or a NaN is refused when a system is built,
with an error naming the setting.
"""

from ._chain import ChainPendulum as ChainPendulum
from ._charged import ChargedParticle as ChargedParticle
from ._dfki import ActuatedDoublePendulum as ActuatedDoublePendulum
from ._oscillator import HarmonicOscillator as HarmonicOscillator
from ._pendulum import DoublePendulum as DoublePendulum, Pendulum as Pendulum
from ._relativistic import RelativisticParticle as RelativisticParticle
from ._springs import SpringNetwork as SpringNetwork
from ._wave import Wave1D as Wave1D
