"""What decides a cut: the user's intent (:class:`PruneConfig`), the importance criteria
by name, and the calibration data the data-aware ones read.

Importing the package registers every built-in criterion, so that ``PruneConfig`` can
check ``importance`` against them.
"""

from slimgraph.criteria.registry import CRITERIA, register  # noqa: I001  (registry first)
from slimgraph.criteria.config import PruneConfig
from slimgraph.criteria import data_aware, gradient, magnitude, routing  # noqa: F401  (they register)
from slimgraph.criteria.calibration import Calibration, calibrate, needs_of

__all__ = ["CRITERIA", "Calibration", "PruneConfig", "calibrate", "needs_of", "register"]
