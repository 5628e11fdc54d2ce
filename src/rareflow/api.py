"""The public Python API: compile a scenario, run the kernel, wrap the result."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np

from rareflow.compile import compile_scenario, resolve_rules
from rareflow.data import Dataset
from rareflow.policy.check import ItemInfo, Shipment, check_shipment
from rareflow.policy.rules import rules_from_table
from rareflow.result import Result, to_dataset
from rareflow.scenario import Scenario, ScenarioError, check_scenario
from rareflow.sim.kernel import simulate_arrays


def simulate(
    dataset: Dataset,
    scenario: Scenario,
    runs: int = 1,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    detail: bool = False,
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
    raw = simulate_arrays(network, controls, runs=runs, progress=progress, detail=detail)
    attrs = {"scenario": scenario.name, "seed": seed, "start": scenario.start,
             "end": scenario.end, "base_year": scenario.base_year,
             "description": " ".join(scenario.description.split()),
             "scenario_json": scenario.model_dump_json(),
             "sector_grade": json.dumps({
                 s: network.grades[g] for s, g in zip(network.sectors, network.sector_grade,
                                                      strict=True) if g >= 0})}
    capacity = np.stack([network.mine_capacity, network.sep_capacity, network.magnet_capacity],
                        axis=1)
    return Result(to_dataset(network, raw, attrs, capacity))


def check(shipment: Shipment, dataset: Dataset, scenario: Scenario | None = None) -> dict:
    """Which rules apply to ``shipment``: the real timeline, or the rules of ``scenario``.

    Raises
    ------
    ScenarioError
        If the shipment names items or countries the dataset lacks.
    """
    countries = set(dataset.countries["iso3"])
    errors = []
    for field in ("exporter", "destination"):
        if getattr(shipment, field) not in countries:
            errors.append(f"{field} (value {getattr(shipment, field)!r}): not a country code "
                          "in the dataset")
    known = set(dataset.items["code"])
    for j, item in enumerate(shipment.items):
        if item.item not in known:
            errors.append(f"items[{j}].item (value {item.item!r}): not an item code in the "
                          "dataset")
        if item.origin not in countries:
            errors.append(f"items[{j}].origin (value {item.origin!r}): not a country code in "
                          "the dataset")
    if errors:
        raise ScenarioError("shipment", errors)
    rules = (resolve_rules(dataset, scenario) if scenario is not None
             else rules_from_table(dataset.policies))
    grades = dataset.magnet_grades
    symbols = set(dataset.elements["symbol"])
    grade_elements = {
        g: {c for c in group["component"] if c in symbols}
        for g, group in grades[grades["mass_fraction"] > 0].groupby("grade")
    }
    infos = {}
    for row in dataset.items.to_dict("records"):
        grade = row.get("magnet_grade")
        infos[row["code"]] = ItemInfo(
            code=row["code"], stage=row["stage"], form=row["form"], elements=set(row["elements"]),
            magnet_elements=grade_elements.get(grade, set()) if isinstance(grade, str) else set(),
        )
    urls = dict(zip(dataset.sources["source_id"], dataset.sources["url"], strict=True))
    return check_shipment(shipment, rules, infos, urls)
