"""Placement policies: BF-IO and the baselines, registered by name."""

from barrierlb.policies import baselines as _baselines  # noqa: F401  (registers the baselines)
from barrierlb.policies.base import Decision, Policy, available_policies, make_policy, register
from barrierlb.policies.bfio import BFIO, BFIOExact

__all__ = ["BFIO", "BFIOExact", "Decision", "Policy", "available_policies", "make_policy", "register"]
