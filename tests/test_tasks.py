import math

import numpy as np
import pytest

from barrierlb import Task


def test_decode_lookahead_grows_by_one_until_predicted_end():
    task = Task.decode(1, prompt_tokens=100, predicted_output_tokens=3)
    assert task.lookahead(5).tolist() == [100, 101, 102, 0, 0, 0]
    assert task.prompt == 100


def test_constant_and_profile_lookahead():
    assert Task.constant(2, 5.0).lookahead(2).tolist() == [5, 5, 5]
    assert Task.from_profile(3, [1, 2]).lookahead(3).tolist() == [1, 2, 0, 0]
    assert Task.from_profile(4, [1, 2, 3, 4]).lookahead(1).tolist() == [1, 2]


@pytest.mark.parametrize("kwargs, message", [
    ({"task_id": -1}, "task_id"),
    ({"task_id": 1, "work": -2.0}, "work"),
    ({"task_id": 1, "work": math.nan}, "work"),
    ({"task_id": 1, "steps": -1.0}, "steps"),
    ({"task_id": 1, "profile": [1.0, -1.0]}, "profile"),
    ({"task_id": 1.5}, "task_id"),
])
def test_bad_task_is_rejected_with_the_argument_named(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        Task(**kwargs)


def test_negative_horizon_is_rejected():
    with pytest.raises(ValueError, match="horizon"):
        Task.constant(1, 1.0).lookahead(-1)


def test_profile_is_read_only_copy():
    profile = np.array([1.0, 2.0])
    task = Task.from_profile(1, profile)
    profile[0] = 9.0
    assert task.lookahead(1).tolist() == [1.0, 2.0]
