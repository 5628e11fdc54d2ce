"""rareflow: simulate the global rare earth supply chain under export controls and shocks.

Public API only; see docs/ for the model and the data.
"""

from rareflow.api import simulate
from rareflow.data import Dataset, DatasetError, Problem, check_dataset, load_dataset
from rareflow.result import Result
from rareflow.scenario import Scenario, ScenarioError, load_scenario

__version__ = "0.1.0"

__all__ = [
    "Dataset",
    "DatasetError",
    "Problem",
    "Result",
    "Scenario",
    "ScenarioError",
    "__version__",
    "check_dataset",
    "load_dataset",
    "load_scenario",
    "simulate",
]
