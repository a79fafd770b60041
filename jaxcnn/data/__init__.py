"""Datasets as grain sources, and the Grain pipeline that batches them."""

from jaxcnn.data.pipeline import Loader
from jaxcnn.data.presets import list_datasets, load_data
from jaxcnn.data.splits import DataError, DataNotFoundError, DataSplits, Source, Subset, stratified_split

__all__ = [
    "DataError",
    "DataNotFoundError",
    "DataSplits",
    "Loader",
    "Source",
    "Subset",
    "list_datasets",
    "load_data",
    "stratified_split",
]
