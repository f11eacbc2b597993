"""What a benchmark run writes: the machine and versions it ran on, the
table on screen, and the JSON, Markdown and plot files."""
import datetime
import importlib
import importlib.metadata
import json
import math
import os
import platform


def cpu_model():
    """The CPU model from /proc/cpuinfo when present, else platform's guess."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def load_average():
    """1, 5 and 15 minute load averages (None where the OS has none): other
    processes competing for the cores make every engine look slower."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_info():
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "load_average_at_end": load_average(),
    }


def _version(module, dist=None):
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    version = getattr(mod, "__version__", None)
    if version is None:
        try:
            version = importlib.metadata.version(dist or module)
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
    return str(version)


def versions():
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "numpy": _version("numpy"),
        "microgrid": _version("microgrid"),
        "micrograd": _version("micrograd"),
        "torch": _version("torch"),
    }


def make_report(results, settings):
    return {
        "machine": machine_info(),
        "versions": versions(),
        "settings": settings,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "results": results,
    }


# --------------------------------------------------------------------------
# Formatting


def format_seconds(s):
    if s is None:
        return ""
    if s >= 1:
        return f"{s:.3f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3f} ms"
    if s >= 1e-6:
        return f"{s * 1e6:.2f} us"
    return f"{s * 1e9:.0f} ns"


def _per_unit(r):
    if "ns_per_unit" not in r:
        return ""
    ns = r["ns_per_unit"]
    if ns >= 1e7:
        text = f"{ns / 1e6:.1f} ms/{r['unit']}"
    elif ns >= 1e4:
        text = f"{ns / 1e3:.1f} us/{r['unit']}"
    else:
        text = f"{ns:.0f} ns/{r['unit']}" if ns >= 100 else f"{ns:.1f} ns/{r['unit']}"
    if r.get("bytes_per_unit") is not None:
        text += f", {r['bytes_per_unit']:.0f} B/{r['unit']}"
    return text


def _ratio(r):
    ratio = r.get("ratio_vs_microgrid")
    if ratio is None:
        return "" if "median_s" not in r or r["engine"] == "microgrid" else "n/a"
    return f"{ratio:.2f}x"


def _check(r):
    check = r.get("check")
    if not check:
        return ""
    if check.get("role") == "reference":
        return "reference" + (" (expected values ok)" if check.get("expected_values") == "ok" else "")
    if check["passed"]:
        return f"ok (max rel err {check['max_rel_err']:.1e})"
    return "FAILED"


def _faults(r):
    f = r.get("minor_faults_per_call")
    if f is None:
        return ""
    return f"{f:.0f}" if f >= 10 else f"{f:.1f}"


COLUMNS = ("workload", "engine", "median", "min", "per unit", "vs microgrid", "faults/call",
           "check")
_LEFT = (0, 1, 7)       # columns aligned left (names, the check); numbers go right


def rows(results):
    out = []
    for r in results:
        if "skipped" in r:
            out.append((r["workload"], r["engine"], "skipped: " + r["skipped"], "", "", "", "",
                        _check(r)))
        else:
            process = r.get("process", "")
            notes = [n for n in ("pool off", "torch ran first") if n in process]
            engine = r["engine"] + (f" ({', '.join(notes)})" if notes else "")
            out.append((r["workload"], engine, format_seconds(r["median_s"]),
                        format_seconds(r["min_s"]), _per_unit(r), _ratio(r), _faults(r), _check(r)))
    return out


def text_table(results, skipped_width=100):
    table = [COLUMNS] + [tuple(c if len(c) <= skipped_width or i != 2 else c[:skipped_width - 3] + "..."
                               for i, c in enumerate(row)) for row in rows(results)]
    # A skipped row's reason spans the time columns: keep it out of the widths.
    widths = [max(len(row[i]) for row in table if not (i == 2 and row[2].startswith("skipped")))
              for i in range(len(COLUMNS))]
    lines = []
    for n, row in enumerate(table):
        if row[2].startswith("skipped"):
            cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2]]
        else:
            cells = [c.ljust(w) if i in _LEFT else c.rjust(w)
                     for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def header_lines(report):
    m, v, s = report["machine"], report["versions"], report["settings"]
    load = ""
    if s.get("load_average_at_start") and m.get("load_average_at_end"):
        load = (f"; load average {s['load_average_at_start'][0]} at start, "
                f"{m['load_average_at_end'][0]} at end")
    return [
        f"machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), "
        f"{m['platform']}{load}",
        "versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val and k != "implementation"),
        f"settings: repeats {s.get('repeats') or 'per workload'}, gc {'on' if s['gc'] else 'off'}, "
        f"torch threads {s.get('torch_threads')}, BLAS threads {s.get('blas_threads')}"
        + (", quick" if s["quick"] else "")
        + (", tensor workloads: a process per engine" if s.get("isolation") else
           (", all in one process" if "isolation" in s else ""))
        + (" (microgrid's after torch ran)" if (s.get("isolation") or {}).get("torch_first") else "")
        + f"; date {report['date_utc']}",
    ]


def markdown(report, command=None):
    lines = ["# microgrid benchmark", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [f"- {line}" for line in header_lines(report)]
    lines += ["", "Median and min are per call; ratio = engine median / microgrid median "
              "(above 1: slower than microgrid); faults/call: minor page faults per call "
              "over the timed repeats.", ""]
    lines.append("| " + " | ".join(COLUMNS) + " |")
    lines.append("|" + "|".join("---" for _ in COLUMNS) + "|")
    for row in rows(report["results"]):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    return "\n".join(lines) + "\n"


def _strict(obj):
    """JSON has no inf or NaN: they become strings ("inf", "nan")."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    return obj


def write_json(report, path):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(_strict(report), f, indent=2, allow_nan=False)
        f.write("\n")


def write_markdown(report, path, command=None):
    with open(path, "w", encoding="utf-8") as f:
        f.write(markdown(report, command))


class PlotError(RuntimeError):
    """--plot cannot be made (matplotlib missing, nothing timed)."""


def write_plot(report, path):
    """Median time per workload and engine, log scale (needs matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotError("--plot needs matplotlib: pip install matplotlib "
                           "(or pip install microgrid[plot])") from None
    timed = [r for r in report["results"] if "median_s" in r]
    workloads = list(dict.fromkeys(r["workload"] for r in timed))
    engines = list(dict.fromkeys(r["engine"] for r in timed))
    if not workloads:
        raise PlotError("--plot: no timed results to plot")
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(workloads) * max(1, len(engines)) / 2 + 1.5))
    height = 0.8 / max(1, len(engines))
    for k, engine in enumerate(engines):
        ys, xs = [], []
        for i, w in enumerate(workloads):
            for r in timed:
                if r["workload"] == w and r["engine"] == engine:
                    ys.append(i + k * height)
                    xs.append(r["median_s"])
        ax.barh(ys, xs, height=height, label=engine)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(workloads))])
    ax.set_yticklabels(workloads)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("median time per call (s, log scale)")
    m = report["machine"]
    ax.set_title(f"microgrid bench: {m['cpu']}, {m['cores']} cores")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

