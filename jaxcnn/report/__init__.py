"""Reports about models and runs."""

from jaxcnn.report.summary import LayerRow, ModelSummary, format_summary, summarize

__all__ = ["LayerRow", "ModelSummary", "format_summary", "summarize"]
