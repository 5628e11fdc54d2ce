"""rareflow: simulate the global rare earth supply chain under export controls and shocks.

Public API only; see docs/ for the model and the data.
"""

from rareflow.data import Dataset, DatasetError, Problem, check_dataset, load_dataset

__version__ = "0.1.0"

__all__ = [
    "Dataset",
    "DatasetError",
    "Problem",
    "__version__",
    "check_dataset",
    "load_dataset",
]
