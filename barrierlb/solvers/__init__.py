"""Solver kernels for the BF-IO step problem: pure functions, arrays in, placements out."""

from barrierlb.solvers.exact import ExactResult, solve_exact
from barrierlb.solvers.fast import FastResult, solve_fast

__all__ = ["ExactResult", "FastResult", "solve_exact", "solve_fast"]
