"""Reports of optimization jobs, as ``kaizen jobs get`` prints them, for programs built on the
SDK (the CT server's web UI shows the same report).

`job_report` formats a `kaizen_sdk.models.Job` from the wire alone; `next_step` says what to
run next, following the verdict. Both live in ``kaizen_sdk._job_report``; this module is their
public name.
"""

from __future__ import annotations

from kaizen_sdk._job_report import MAX_REPORT_LINES, job_report, next_step

__all__ = ["MAX_REPORT_LINES", "job_report", "next_step"]
