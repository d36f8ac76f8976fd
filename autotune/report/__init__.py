"""The study report: plotly figures on one self-contained HTML page, or PNG files.

Public: ``write_report``, ``build_sections`` (the report's views, in order), ``Section`` and
``ReportError`` (``page.py``: the page around the figures). ``figures`` builds each view,
``snapshot`` reads the study once and ranks and samples its trials for them.
Must not know about: training, the model (only metric names trials store), how the study was run.

    from autotune.report import write_report
    write_report(optuna.load_study(study_name="moe-small", storage=url), Path("report.html"))
"""
from autotune.report.page import FORMATS, ReportError, Section, build_sections, write_report

__all__ = ["FORMATS", "ReportError", "Section", "build_sections", "write_report"]
