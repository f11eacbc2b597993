"""The ``microgrid`` command line: ``bench``, ``demo``, ``check`` and ``version``.

Installed as the ``microgrid`` console script and run by
``python -m microgrid``.  Subcommands import what they need lazily, so
``microgrid --help`` stays fast and works without the optional packages.
"""
import argparse
import importlib
import sys

DESCRIPTION = """\
microgrid: a C-accelerated, scalar-first reverse-mode autograd engine
(micrograd's API, PyTorch's conventions for tensors).
"""

def _version_text():
    import platform

    import numpy

    import microgrid
    return (f"microgrid {microgrid.__version__} (Python {platform.python_version()}, "
            f"numpy {numpy.__version__})")


def build_parser():
    from .bench import command as bench_command

    parser = argparse.ArgumentParser(
        prog="microgrid", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `microgrid <command> --help` for the options of each command.")
    parser.add_argument("--version", action="store_true",
                        help="print microgrid's version and exit (same as `microgrid version`)")
    sub = parser.add_subparsers(dest="command", metavar="<command>")

    bench = sub.add_parser(
        "bench", help="time workloads on microgrid, micrograd and PyTorch side by side",
        description=bench_command.DESCRIPTION, epilog=bench_command.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    bench_command.add_arguments(bench)

    demo = sub.add_parser(
        "demo", help="train small networks end to end and write a report of what they learned",
        description="Run microgrid's end-to-end demo (training on the embedded data sets, "
                    "with the results written to a directory).  All options after `demo` "
                    "are passed to the demo itself.")
    demo.add_argument("--out", metavar="DIR", default="microgrid-demo",
                      help="directory for the demo's output files (default: microgrid-demo)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--quick", action="store_true",
                      help="a shorter run (fewer epochs), for tests and CI")

    from .tools.check import WORKSHEET_HELP
    check = sub.add_parser(
        "check", help="mark a hand-worked backprop worksheet: the first wrong step, and why",
        description="Mark the answers of a worksheet (the graph as assignments, the root, "
                    "the person's numbers).  Exit status: 0 when every answer is correct or "
                    "carried, 1 when one is wrong, 2 for a malformed worksheet.",
        epilog=WORKSHEET_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("worksheet", metavar="WORKSHEET", help="the worksheet file")
    check.add_argument("--digits", type=int, default=4, help="decimals shown (default: 4)")
    check.add_argument("--markdown", action="store_true", help="print the sheet as Markdown")

    sub.add_parser("version", help="print microgrid's version (and Python's, numpy's)",
                   description="Print microgrid's version, with the Python and numpy it runs on.")
    return parser


def _run_demo(demo_argv):
    demo = importlib.import_module(__package__ + ".demo")
    status = demo.main(demo_argv)     # the demo parses its own options
    return status if isinstance(status, int) else 0


def _run_check(args):
    from .tools.check import WorksheetError, check_worksheet
    try:
        report = check_worksheet(args.worksheet, digits=args.digits)
    except OSError as exc:
        print(f"error: cannot read {args.worksheet}: {exc.strerror}", file=sys.stderr)
        return 2
    except WorksheetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.to_markdown() if args.markdown else report)
    return 0 if report.ok else 1


def main(argv=None):
    """Run the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Only `demo` takes options this parser does not know: they are the
    # demo's own and go to its main().
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "demo":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.version or args.command == "version":
        print(_version_text())
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "bench":
        from .bench import command as bench_command
        from .bench.report import PlotError
        try:
            return bench_command.run(args, "microgrid " + " ".join(argv))
        except (bench_command.UsageError, PlotError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.command == "demo":
        return _run_demo(argv[argv.index("demo") + 1:])
    if args.command == "check":
        return _run_check(args)
    parser.error(f"unknown command {args.command!r}")
    return 2
