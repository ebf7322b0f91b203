"""``sdcallbacks report``: a run's output folder as one self-contained HTML page and PNG plots."""

from sdcallbacks.report.page import ReportFiles, write_report
from sdcallbacks.report.run_data import ReportError, RunData, read_run

__all__ = ["ReportError", "ReportFiles", "RunData", "read_run", "write_report"]
