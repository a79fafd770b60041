"""Reports about models and runs: the layer summary, the run folder's files, training curves."""

from jaxcnn.report.console import format_epoch
from jaxcnn.report.plots import plot_history
from jaxcnn.report.run_log import RunLogger, write_json
from jaxcnn.report.summary import LayerRow, ModelSummary, format_summary, summarize

__all__ = [
    "LayerRow",
    "ModelSummary",
    "RunLogger",
    "format_epoch",
    "format_summary",
    "plot_history",
    "summarize",
    "write_json",
]
