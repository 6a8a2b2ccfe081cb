"""Rewrite an audit's report (report.md, results.csv, plots) from its committed results.json,
without measuring anything again: `python experiments/rewrite_audit_report.py
experiments/reports/audit-small`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fedprllm_secure.audit.config import AuditConfig
from fedprllm_secure.audit.report import write_report


def main(folder: Path) -> None:
    saved = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    config = AuditConfig.load(None, saved["config"])
    for path in write_report(folder, config, saved["points"]):
        print(path)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "experiments/reports/audit-small"))
