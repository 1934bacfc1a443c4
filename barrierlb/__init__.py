"""barrierlb: keep barrier-synchronized workers busy by placing sticky tasks well.

Implements the BF-IO principle (Chen et al., arXiv 2601.17855): when slots free
up, place new non-migratable tasks to minimize the predicted imbalance over a
short horizon.
"""

from barrierlb.policies import Decision, Policy, available_policies, make_policy, register
from barrierlb.problem import StepProblem, horizon_weights, predicted_imbalance
from barrierlb.state import ClusterState, Placement
from barrierlb.tasks import Task

__version__ = "0.2.0"

__all__ = ["ClusterState", "Decision", "Placement", "Policy", "StepProblem", "Task", "available_policies",
           "horizon_weights", "make_policy", "predicted_imbalance", "register", "__version__"]
