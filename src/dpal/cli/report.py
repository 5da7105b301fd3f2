"""``dpal report``: a markdown + HTML report of a run for a privacy reviewer."""

from __future__ import annotations

import argparse
from typing import Any

from dpal.cli.common import add_data_dir


def cmd_report(a: argparse.Namespace) -> None:
    from dpal.report import write_report

    md, page = write_report(a.run_dir, data_dir=a.data_dir)
    print(f"report: {md}\n        {page} (self-contained; open it in a browser)")


def register(sub: Any) -> None:
    p = sub.add_parser("report", help="a markdown + HTML report of a run for a privacy reviewer")
    p.add_argument("run_dir", help="a dpal train / improve / run / reproduce figure folder")
    add_data_dir(p)
    p.set_defaults(func=cmd_report)
