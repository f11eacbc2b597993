"""``microgrid bench``: its command-line options and what running it does."""
import argparse
import sys

from .engines import DISABLE_ENV, ENGINE_NAMES

DESCRIPTION = f"""\
Time the same workloads on microgrid, micrograd and PyTorch (float64 and
float32), each engine when installed.  Before timing, every workload checks
that the engines agree on its values and gradients (tolerance stated per
workload); an engine that disagrees is not timed.  The check's call is the
warm-up (plus one more call when it was short); then the median and minimum
over repeats (time.perf_counter), with Python's garbage collector on unless
--no-gc, and the minor page faults per call over the repeats (getrusage).
The tensor workloads run each engine in a fresh child process, so that no
engine's allocator state colours another's (--in-process: all in this one;
--torch-first: microgrid's child runs torch's version first, as a program
that used torch before microgrid).  Ratios are engine median / microgrid
median.  Engines that are
missing (or listed in {DISABLE_ENV}, e.g. {DISABLE_ENV}=torch,micrograd)
are reported as skipped with the reason.

--json writes an object with "machine", "versions", "settings" and
"results": one record per workload and engine with "workload", "engine",
"median_s", "min_s", "repeats", "ratio_vs_microgrid", "minor_faults_per_call",
"bytes_per_unit" (where measured: tracemalloc, the engines whose nodes live on
Python's heap), "process" (tensor workloads) and "check", or
"skipped" with the reason.  Exit status 1 when engines disagree or a
workload raised.
"""

EPILOG = """\
examples:
  microgrid bench --list
  microgrid bench --quick
  microgrid bench --only scalar_build deep_chain --json out.json --markdown out.md
  microgrid bench --engines microgrid micrograd --repeats 5 --plot bench.png
"""


def add_arguments(parser):
    parser.add_argument("--quick", action="store_true",
                        help="everything in under a minute: 3 repeats or ~1 s per workload "
                             "and engine, the scalar graph at 2*10^4 nodes and the sum of "
                             "products at 10^4 terms instead of 10^5, deep chain capped at "
                             "10^5 nodes (for tests and CI)")
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        help="run only these workloads (exact name, glob such as 'deep_chain_*', "
                             "or prefix such as 'deep_chain'); see --list")
    parser.add_argument("--list", action="store_true",
                        help="list the workloads and exit")
    parser.add_argument("--engines", nargs="+", metavar="ENGINE", choices=ENGINE_NAMES,
                        default=list(ENGINE_NAMES),
                        help=f"engines to run (default: all of {', '.join(ENGINE_NAMES)})")
    parser.add_argument("--repeats", type=int, metavar="N",
                        help="timed repeats per workload and engine (default: per workload, "
                             "usually 7, or 3 with --quick)")
    parser.add_argument("--torch-threads", type=int, default=1, metavar="N",
                        help="PyTorch's intra-op threads, and numpy's BLAS threads when "
                             "threadpoolctl is installed (default 1: microgrid and micrograd "
                             "use one core)")
    parser.add_argument("--in-process", dest="isolate", action="store_false",
                        help="run the tensor workloads of every engine in this process "
                             "(default: a fresh child process per engine, so that no engine's "
                             "allocator state colours another's)")
    parser.add_argument("--torch-first", action="store_true",
                        help="in microgrid's child process, run the workload on torch first, "
                             "as in a program that used torch before microgrid")
    parser.add_argument("--no-pool", dest="pool", action="store_false",
                        help="time microgrid's tensor workloads with its buffer pool off "
                             "(mg.set_cache_limit(0)), for comparison")
    parser.add_argument("--no-gc", dest="gc", action="store_false",
                        help="turn Python's garbage collector off while timing (default: on)")
    parser.add_argument("--json", metavar="FILE",
                        help="write machine, versions and results as JSON")
    parser.add_argument("--markdown", metavar="FILE",
                        help="write the table as Markdown")
    parser.add_argument("--plot", metavar="FILE",
                        help="write a bar chart of the median times (needs matplotlib)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress lines on stderr")
    return parser


def make_parser(prog="microgrid bench"):
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    return add_arguments(parser)


class UsageError(ValueError):
    """A bad option value; the command line prints it and exits with 2."""


def list_workloads(workloads, out=None):
    out = out or sys.stdout
    width = max(len(w.name) for w in workloads)
    for w in workloads:
        print(f"{w.name.ljust(width)}  {w.description}", file=out)


def _set_torch_threads(engines, n):
    from .engines import unavailable_reason
    if any(e.startswith("torch") and unavailable_reason(e) is None for e in engines):
        import torch
        torch.set_num_threads(n)


def _limit_blas_threads(n):
    """Hold numpy's BLAS to ``n`` threads, as torch is held, so neither
    engine's matrix products fight over the cores (on a busy 2-core machine a
    multi-threaded BLAS made small products 50x slower).  Returns a context
    and a description for the report."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib
        return contextlib.nullcontext(), "unchanged (install threadpoolctl to limit them)"
    return threadpool_limits(limits=n, user_api="blas"), n


def run(args, argv_text="microgrid bench", out=None):
    """Run ``microgrid bench`` with parsed ``args``; returns the exit status
    (0, or 1 when a cross-engine check failed or a workload raised)."""
    from . import harness, registry, report

    out = out or sys.stdout
    if args.repeats is not None and args.repeats < 1:
        raise UsageError(f"--repeats must be at least 1, got {args.repeats}")
    workloads = registry.all_workloads()
    if args.list:
        list_workloads(workloads, out)
        return 0
    try:
        selected = registry.select(workloads, args.only)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.torch_threads < 1:
        raise UsageError(f"--torch-threads must be at least 1, got {args.torch_threads}")
    engines = list(dict.fromkeys(args.engines))
    _set_torch_threads(engines, args.torch_threads)
    log = None if args.quiet else sys.stderr
    load_at_start = report.load_average()
    blas_limit, blas_threads = _limit_blas_threads(args.torch_threads)
    if (args.torch_first or not args.pool) and not args.isolate:
        raise UsageError("--torch-first and --no-pool need the child processes (drop --in-process)")
    isolation = ({"threads": args.torch_threads, "torch_first": args.torch_first,
                  "pool": args.pool} if args.isolate else None)
    with blas_limit:
        results = harness.run(selected, engines, quick=args.quick, repeats=args.repeats,
                              use_gc=args.gc, log=log, isolation=isolation)
    settings = {"quick": args.quick, "gc": args.gc, "repeats": args.repeats,
                "isolation": isolation,
                "torch_threads": args.torch_threads, "blas_threads": blas_threads,
                "load_average_at_start": load_at_start,
                "engines": engines, "only": args.only, "command": argv_text}
    rep = report.make_report(results, settings)
    for line in report.header_lines(rep):
        print(line, file=out)
    print(file=out)
    print(report.text_table(results), file=out)
    if args.json:
        report.write_json(rep, args.json)
    if args.markdown:
        report.write_markdown(rep, args.markdown, argv_text)
    if args.plot:
        report.write_plot(rep, args.plot)
    status = 0
    failed = [r for r in results if r.get("check") and not r["check"]["passed"]]
    if failed:
        names = ", ".join(f"{r['workload']}[{r['engine']}]" for r in failed)
        print(f"\nerror: engines disagree (not timed): {names}", file=sys.stderr)
        status = 1
    errors = [r for r in results if r.get("error")]
    if errors:
        names = ", ".join(f"{r['workload']}[{r['engine']}]" for r in errors)
        print(f"\nerror: workloads raised an exception (see the table): {names}",
              file=sys.stderr)
        status = 1
    return status


def main(argv=None):
    """``microgrid bench`` on its own (``microgrid.cli`` is the usual way in)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return run(make_parser().parse_args(argv), "microgrid bench " + " ".join(argv))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
