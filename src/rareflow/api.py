"""The public Python API: compile a scenario, run the kernel, wrap the result."""

from __future__ import annotations

from collections.abc import Callable

from rareflow.compile import compile_scenario
from rareflow.data import Dataset
from rareflow.result import Result, to_dataset
from rareflow.scenario import Scenario, ScenarioError, check_scenario
from rareflow.sim.kernel import simulate_arrays


def simulate(
    dataset: Dataset,
    scenario: Scenario,
    runs: int = 1,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Result:
    """Simulate ``scenario`` on ``dataset``.

    Parameters
    ----------
    dataset : Dataset
        From :func:`rareflow.load_dataset`.
    scenario : Scenario
        From :func:`rareflow.load_scenario`.
    runs : int
        Ensemble size; the run axis leads every array. Without uncertain parameters the runs are
        identical.
    seed : int
        Seed for sampled parameters; identical seeds give identical results.
    progress : callable(done, total), optional
        Called after each simulated month.

    Raises
    ------
    ScenarioError
        If the scenario names codes the dataset lacks or dates outside its horizon.
    """
    errors = check_scenario(scenario, dataset)
    if errors:
        raise ScenarioError(scenario.name, errors)
    if runs < 1:
        raise ScenarioError(scenario.name, [f"runs (value {runs}): must be at least 1"])
    network, controls = compile_scenario(dataset, scenario)
    raw = simulate_arrays(network, controls, runs=runs, progress=progress)
    attrs = {"scenario": scenario.name, "seed": seed, "start": scenario.start,
             "end": scenario.end, "base_year": scenario.base_year}
    return Result(to_dataset(network, raw, attrs))
