"""The packaged dataset: tables, their schemas, loading and validation."""

from rareflow.data.loader import Dataset, check_dataset, load_dataset, table_records
from rareflow.data.problems import DatasetError, Problem
from rareflow.data.schema import TABLE_ORDER, all_schemas, load_schema

__all__ = [
    "TABLE_ORDER",
    "Dataset",
    "DatasetError",
    "Problem",
    "all_schemas",
    "check_dataset",
    "load_dataset",
    "load_schema",
    "table_records",
]
