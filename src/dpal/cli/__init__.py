"""``dpal`` command line: a package of thin modules, one per command group, each parsing
arguments and calling the library."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from dpal.cli import audit, data, experiments, improve, methods, privacy, report, train
from dpal.core.errors import DpalError, DpalWarning

GROUPS = (data, privacy, train, improve, experiments, methods, report, audit)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dpal",
        description="Differentially private image "
        "classifiers, improved with public data, under one ledger.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)
    return parser


def _one_line_warnings(show: Any) -> Any:
    """``warnings.showwarning`` that prints dpal's warnings as one line, others as Python does."""

    def showwarning(message: Any, category: Any, *rest: Any) -> None:
        if issubclass(category, DpalWarning):
            print(f"dpal: warning: {message}", file=sys.stderr)
        else:
            show(message, category, *rest)

    return showwarning


def main(argv: list[str] | None = None) -> int:
    import warnings

    args = build_parser().parse_args(argv)
    show = warnings.showwarning
    warnings.showwarning = _one_line_warnings(show)
    try:
        args.func(args)
    except DpalError as err:
        print(f"dpal: error: {err}", file=sys.stderr)
        return 2
    except PermissionError as err:
        print(f"dpal: error: {err.filename}: permission denied; choose a writable path.",
              file=sys.stderr)  # fmt: skip
        return 2
    except KeyboardInterrupt:
        print("dpal: interrupted; checkpoints and the ledger so far are kept.", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = show
    return 0
