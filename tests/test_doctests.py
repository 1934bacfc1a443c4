"""The examples in the public docstrings run and say what they claim."""

import doctest
import importlib

import pytest

MODULES = ["barrierlb._xp", "barrierlb.problem", "barrierlb.state", "barrierlb.ledger", "barrierlb.policies.base",
           "barrierlb.router", "barrierlb.outputs"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert tried > 0, f"{name} has no examples"
    assert failures == 0


def test_import_barrierlb_stays_light():
    import subprocess
    import sys

    code = ("import sys, barrierlb; heavy = [m for m in ('mpi4py', 'distributed', 'cupy', 'matplotlib', 'rich') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
