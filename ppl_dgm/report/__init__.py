"""One self-contained HTML page per comparison or diagnosis (``report.html``).

The page holds the command and software versions that made the result, the tables with
an explanation of every column, and every figure embedded as a PNG ``data:`` URI; it
needs no network and no JavaScript.  :meth:`ppl_dgm.compare.ComparisonResult.save` and
:meth:`ppl_dgm.diagnostics.Diagnosis.save` write it by default (``report=False`` skips
it), as do ``ppl-dgm compare`` and ``ppl-dgm diagnose`` (``--no-report`` skips it).

Example::

    from ppl_dgm.report import write_compare_report, write_diagnosis_report
    write_compare_report(ComparisonResult.load("runs/cmp"), "runs/cmp")
"""

from .compare import compare_report_html, write_compare_report
from .diagnosis import diagnosis_report_html, write_diagnosis_report
from .html import REPORT_FILE, environment

__all__ = ["REPORT_FILE", "compare_report_html", "diagnosis_report_html", "environment",
           "write_compare_report", "write_diagnosis_report"]
