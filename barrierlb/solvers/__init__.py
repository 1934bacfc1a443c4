"""Solver kernels for the BF-IO step problem: pure functions, arrays in, placements out."""

from barrierlb.solvers.exact import ExactResult, solve_exact, solve_exact_problem
from barrierlb.solvers.fast import PATHS, FastResult, greedy_kernel, greedy_tie_break, solve_fast, solve_problem

__all__ = ["PATHS", "ExactResult", "FastResult", "greedy_kernel", "greedy_tie_break", "solve_exact",
           "solve_exact_problem", "solve_fast", "solve_problem"]
