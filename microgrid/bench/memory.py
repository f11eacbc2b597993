"""Peak memory of the demo's digits CNN training, with microgrid's buffer
pool and without it (``python -m microgrid.bench.memory``).

Each configuration runs in a fresh child process (so neither inherits the
other's heap): the demo's model, optimiser (Adam), batch size (32), data and
per-epoch evaluation, for ``--steps`` steps.  Reported per configuration:
the peak resident set size (getrusage ``ru_maxrss``), the resident size at
the end of every epoch (steady means no growth after the first), and the
pool's own high-water marks (``peak_held``: blocks handed out or cached;
``peak_requested``: what the live buffers asked for).
"""
import argparse
import json
import os
import subprocess
import sys


def _rss_bytes():
    """Current resident set size (Linux /proc), or None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def _peak_rss_bytes():
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024   # Linux counts KiB


def train(steps, pool, seed=0):
    """The demo's digits training loop for ``steps`` steps; returns the
    measurements as a dict."""
    import numpy as np

    import microgrid as mg
    from microgrid import functional as F
    from microgrid.datasets import batches, load_digits, train_test_split
    from microgrid.demo import _as_input, digits_accuracy, digits_model
    from microgrid.optim import Adam

    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(1, "blas")
    except ImportError:
        pass
    if not pool:
        mg.set_cache_limit(0)
    start_rss = _rss_bytes()
    mg.manual_seed(seed)
    images, labels = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(images, labels, test_size=0.25,
                                                        seed=seed, stratify=labels)
    model = digits_model()
    opt = Adam(model.parameters(), lr=2e-3)
    epoch_rss, losses, step, epoch = [], [], 0, 0
    while step < steps:
        model.train()
        for xb, yb in batches(X_train, y_train, batch_size=32, seed=seed * 1000 + epoch):
            loss = F.cross_entropy(model(_as_input(xb)), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.data))
            step += 1
            if step == steps:
                break
        model.eval()
        digits_accuracy(model, X_test, y_test)
        epoch_rss.append(_rss_bytes())
        epoch += 1
    info = mg.cache_info()
    return {"pool": pool, "steps": steps, "epochs": epoch, "start_rss": start_rss,
            "peak_rss": _peak_rss_bytes(), "epoch_rss": epoch_rss,
            "pool_peak_held": info["peak_held"], "pool_peak_requested": info["peak_requested"],
            "final_loss": losses[-1], "loss_sum": float(np.sum(losses))}


def run_child(steps, pool):
    proc = subprocess.run([sys.executable, "-m", "microgrid.bench.memory", "--child",
                           "on" if pool else "off", "--steps", str(steps)],
                          stdout=subprocess.PIPE, check=True)
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


def _mb(x):
    return "n/a" if x is None else f"{x / 2**20:.1f} MB"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m microgrid.bench.memory",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--child", choices=("on", "off"), help=argparse.SUPPRESS)
    parser.add_argument("--json", metavar="FILE", help="write both runs' measurements as JSON")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(train(args.steps, args.child == "on")))
        return 0
    runs = {"with pool": run_child(args.steps, True), "without pool": run_child(args.steps, False)}
    for name, r in runs.items():
        growth = (max(r["epoch_rss"][1:]) - r["epoch_rss"][0]) if len(r["epoch_rss"]) > 1 else 0
        print(f"{name:>13}: peak RSS {_mb(r['peak_rss'])} (at start {_mb(r['start_rss'])}), "
              f"RSS after epoch 1 {_mb(r['epoch_rss'][0])}, growth after epoch 1 {_mb(growth)}, "
              f"{r['epochs']} epochs; pool peak held {_mb(r['pool_peak_held'])}, "
              f"peak requested {_mb(r['pool_peak_requested'])}")
    on, off = runs["with pool"], runs["without pool"]
    print(f"peak RSS ratio with/without pool: {on['peak_rss'] / off['peak_rss']:.3f}; "
          f"above the start: {(on['peak_rss'] - on['start_rss']) / max(off['peak_rss'] - off['start_rss'], 1):.3f}; "
          f"same losses: {on['loss_sum'] == off['loss_sum']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
