"""Datasets as grain sources, and the Grain pipeline that batches them."""

from jaxcnn.lazy import lazy_exports

# name -> module, imported on first use: reading a dataset's config or presets does not start
# grain. (No name here may be a submodule's.)
_EXPORTS = {
    "DataError": "jaxcnn.data.splits",
    "DataNotFoundError": "jaxcnn.data.splits",
    "DataSplits": "jaxcnn.data.splits",
    "Loader": "jaxcnn.data.pipeline",
    "Source": "jaxcnn.data.splits",
    "Subset": "jaxcnn.data.splits",
    "list_datasets": "jaxcnn.data.presets",
    "load_data": "jaxcnn.data.presets",
    "stratified_split": "jaxcnn.data.splits",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
