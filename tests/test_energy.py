import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from barrierlb import make_policy
from barrierlb.energy import (
    AbsolutePowerModel,
    PowerModel,
    RooflineStepTime,
    StepTimeModel,
    power_preset,
    relative_power,
    step_cost,
)
from barrierlb.hardware import ACCELERATOR_PRESETS, MODEL_PRESETS, ModelSpec, accelerator_preset, model_preset
from barrierlb.simulator import SimulationConfig, simulate
from barrierlb.workloads import synthetic

ALL_ALIVE = np.ones(4, dtype=bool)


def roofline(chip="h200", model="deepseek-v3", **kwargs):
    return RooflineStepTime(accelerator_preset(chip), model_preset(model), **kwargs)


def test_relative_model_keeps_the_reference_arithmetic_step_for_step():
    # Recompute every step's energy from the recorded loads with the reference formula, independently of
    # step_cost: the default (relative, linear) model must give the same floats.
    workload = synthetic(500, seed=4, prompt_mean=300, prompt_std=200, output_mean=40, output_std=30)
    config = SimulationConfig(n_workers=4, slots=8, pool=16, record_loads=True)
    result = simulate(workload, make_policy("jsq"), config=config)
    model = StepTimeModel.paper(8)           # the reference powers are written out below: 100 W, 300 W span, 0.7
    expected_time, expected_energy = [], []
    for loads in result.loads:
        duration = model.overhead_s + model.per_unit_s * loads.max()
        expected_time.append(duration)
        expected_energy.append(float((100.0 + 300.0 * np.clip(loads / loads.max(), 0, 1) ** 0.7).sum()) * duration)
    assert result.step_time_s.tolist() == expected_time
    window = result.metrics.window_steps
    assert result.metrics.energy_j == float(np.sum(expected_energy[:window]))


def test_default_power_and_step_time_are_the_papers():
    chip = accelerator_preset("paper")
    relative = relative_power(chip)
    assert (relative.idle_w, relative.max_w, relative.exponent) == (100.0, 400.0, 0.7)
    paper = power_preset("paper")
    loads = np.array([3000.0, 5000.0, 0.0, 4200.0])
    tokens = np.array([3, 5, 0, 4])
    assert step_cost(StepTimeModel.paper(72), relative, loads, tokens, ALL_ALIVE) == \
        step_cost(StepTimeModel.paper(72), paper, loads, tokens, ALL_ALIVE)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1.0, 3.0), min_size=1, max_size=20), st.floats(0.05, 1.0), st.floats(0.1, 2.0))
def test_absolute_power_is_monotone_capped_and_floored(utilization, saturation, exponent):
    power = AbsolutePowerModel(idle_w=100.0, max_w=400.0, exponent=exponent, saturation=saturation)
    u = np.sort(np.asarray(utilization))
    watts = power.power_w(u)
    assert (np.diff(watts) >= 0).all()
    assert (watts >= 100.0).all() and (watts <= 400.0).all()
    assert power.power_w([saturation, 1.0, 2.0]).tolist() == [400.0, 400.0, 400.0]
    assert power.power_w([0.0]).tolist() == [100.0]
    spin = dataclasses.replace(power, wait_w=250.0)
    assert spin.power_w([0.0]).tolist() == [250.0]
    assert (spin.power_w(u) >= watts).all()


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(ACCELERATOR_PRESETS)), st.sampled_from(sorted(MODEL_PRESETS)),
       st.lists(st.tuples(st.integers(0, 64), st.integers(0, 400_000)), min_size=2, max_size=8),
       st.integers(0, 1), st.integers(1, 5000))
def test_roofline_time_grows_with_tokens_and_resident_tokens(chip, model, workers, which, extra):
    step = roofline(chip, model)
    tokens = np.array([t for t, _ in workers], dtype=float)
    loads = np.array([t * 10 + r for t, r in workers], dtype=float)
    alive = np.ones(len(workers), dtype=bool)
    base = step.busy_s(loads, tokens, alive)
    more_loads, more_tokens = loads.copy(), tokens.copy()
    (more_tokens if which else more_loads)[0] += extra
    grown = step.busy_s(more_loads, more_tokens, alive)
    assert grown[0] >= base[0] and (base >= 0).all()
    duration, energy = step_cost(step, AbsolutePowerModel.for_worker(accelerator_preset(chip)), loads, tokens, alive)
    assert duration == pytest.approx(step.overhead_s + base.max())
    chip_preset = accelerator_preset(chip)
    parallel = model_preset(model).tensor_parallel
    assert len(workers) * chip_preset.idle_w * duration <= energy * parallel + 1e-9
    assert energy <= len(workers) * chip_preset.max_w * duration + 1e-9


def test_roofline_bound_by_the_slower_resource():
    dense = model_preset("llama-3-70b")
    chip = accelerator_preset("h100")
    one_token = RooflineStepTime(chip, dense).busy_s(np.array([1000.0]), np.array([1.0]), np.array([True]))
    # One decode token is deep in the memory-bound region: weights plus KV over the bandwidth.
    memory_s = (dense.weight_bytes_per_param * dense.total_params + dense.kv_bytes_per_token * 1000) / chip.hbm_bytes_s
    assert one_token[0] == pytest.approx(memory_s / dense.tensor_parallel)
    faster = dataclasses.replace(chip, peak_bf16_flops=chip.peak_bf16_flops * 10)
    assert RooflineStepTime(faster, dense).busy_s(np.array([1000.0]), np.array([1.0]), np.array([True])) == \
        pytest.approx(one_token)
    wider = dataclasses.replace(chip, hbm_bytes_s=chip.hbm_bytes_s * 2)
    assert RooflineStepTime(wider, dense).busy_s(np.array([1000.0]), np.array([1.0]), np.array([True])) == \
        pytest.approx(one_token / 2)


def test_empty_workers_idle_for_a_dense_model_but_join_the_experts_of_a_moe():
    loads, tokens = np.array([50_000.0, 0.0]), np.array([16.0, 0.0])
    alive = np.array([True, True])
    dense = roofline("h200", "llama-3-70b").busy_s(loads, tokens, alive)
    moe = roofline("h200", "deepseek-v3").busy_s(loads, tokens, alive)
    assert dense[1] == 0.0 and dense[0] > 0
    assert moe[1] > 0 and moe[0] > moe[1]


def test_absolute_power_does_not_count_a_balanced_light_cluster_at_full_power():
    # Four workers with one short request each: the relative model sees every worker at max_w.
    loads, tokens = np.full(4, 100.0), np.ones(4)
    step = roofline("h200", "llama-3-70b")
    chip = accelerator_preset("h200")
    _, relative_j = step_cost(step, relative_power(chip, tensor_parallel=4), loads, tokens, ALL_ALIVE)
    duration, absolute_j = step_cost(step, AbsolutePowerModel.for_worker(chip, tensor_parallel=4), loads, tokens,
                                     ALL_ALIVE)
    assert relative_j == pytest.approx(4 * 4 * chip.max_w * duration)
    assert absolute_j < relative_j


def test_dead_workers_draw_nothing_and_speeds_slow_the_step():
    step = StepTimeModel(overhead_s=1.0, per_unit_s=0.01)
    power = AbsolutePowerModel(idle_w=100.0, max_w=200.0, exponent=1.0)
    loads, tokens = np.array([100.0, 100.0, 400.0]), np.array([1, 1, 1])
    duration, energy = step_cost(step, power, loads, tokens, np.array([True, True, False]))
    assert duration == pytest.approx(2.0)
    assert energy == pytest.approx(2 * 200.0 * 2.0)      # both alive workers busy the whole step
    duration, energy = step_cost(step, power, loads, tokens, np.array([True, True, False]),
                                 speeds=np.array([0.5, 1.0, 1.0]))
    assert duration == pytest.approx(3.0)
    assert energy == pytest.approx((200.0 + 100.0 + 100.0 * 2.0 / 3.0) * 3.0)


@pytest.mark.parametrize("spec", ["fcfs", "bfio:horizon=8"])
def test_absolute_model_is_close_to_the_relative_one_in_the_overloaded_pool(spec):
    # Overloaded pool, the paper's powers and linear step time: every worker is full every step, so the
    # two models differ only in how a worker's load below the slowest one's maps to power.
    workload = synthetic(1500, seed=2, prompt_mean=2000, prompt_std=1500, output_mean=300, output_std=200)
    runs = {}
    for name, power in [("relative", power_preset("paper")),
                        ("absolute", AbsolutePowerModel.for_worker(accelerator_preset("paper")))]:
        config = SimulationConfig(n_workers=8, slots=16, pool=32, power=power)
        runs[name] = simulate(workload, make_policy(spec), config=config).metrics
    assert runs["absolute"].throughput_tok_s == runs["relative"].throughput_tok_s
    assert runs["absolute"].energy_per_token_j == pytest.approx(runs["relative"].energy_per_token_j, rel=0.05)
    assert runs["absolute"].energy_per_token_j >= runs["relative"].energy_per_token_j


def test_roofline_simulation_runs_to_completion_and_conserves_tokens():
    workload = synthetic(300, seed=1, prompt_mean=500, prompt_std=300, output_mean=30, output_std=20)
    config = SimulationConfig(n_workers=4, slots=8, pool=16, step_time=roofline("b200"),
                              power=AbsolutePowerModel.for_worker(accelerator_preset("b200")))
    result = simulate(workload, make_policy("bfio:horizon=4"), config=config)
    assert result.metrics.requests_completed == len(workload) and not result.truncated
    assert (result.step_time_s > config.step_time.overhead_s).all()


def test_bad_presets_and_models_are_named():
    with pytest.raises(ValueError, match="unknown accelerator 'tpu'; known: paper, a100"):
        accelerator_preset("tpu")
    with pytest.raises(ValueError, match="unknown model 'gpt'"):
        model_preset("gpt")
    with pytest.raises(TypeError, match="preset name"):
        model_preset(3)
    dense = model_preset("llama-3-70b")
    with pytest.raises(ValueError, match="routed_experts"):
        dataclasses.replace(dense, routed_experts=8)
    with pytest.raises(ValueError, match="active_params"):
        dataclasses.replace(dense, active_params=dense.total_params * 2)
    with pytest.raises(ValueError, match="wait_w"):
        AbsolutePowerModel(idle_w=100.0, max_w=400.0, wait_w=50.0)
    with pytest.raises(ValueError, match="saturation"):
        AbsolutePowerModel(idle_w=100.0, max_w=400.0, saturation=0.0)
    with pytest.raises(TypeError, match="power must be"):
        SimulationConfig(power="paper")
    with pytest.raises(TypeError, match="step_time must be"):
        SimulationConfig(step_time=3.0)
    with pytest.raises(TypeError, match="accelerator must be"):
        RooflineStepTime("h200", dense)


def test_every_preset_states_its_source():
    for preset in [*ACCELERATOR_PRESETS.values(), *MODEL_PRESETS.values()]:
        assert len(preset.source) > 40
    assert isinstance(model_preset("deepseek-v3"), ModelSpec)
    moe = model_preset("deepseek-v3")
    assert 0 < moe.active_routed_params < moe.routed_expert_params
    assert isinstance(power_preset("b200"), PowerModel)
