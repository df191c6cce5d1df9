"""Bar chart of time / memory-bandwidth floor, per shape and implementation, from bench.py's JSON.

    python benchmarks/plot.py benchmarks/results/bench.json [out.png]

One panel per (mode, dtype); bars per implementation on a log scale; the dashed line at 1 is
the floor (fewest bytes any implementation must move, over the measured copy bandwidth).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

IMPL_COLORS = {"jaxqif": "#1f77b4", "spikingjelly-triton": "#ff7f0e", "pure-jax": "#7f7f7f"}


def shape_label(t: int, n: int) -> str:
    """'T x N' with N as a power of two when it is one."""
    exponent = n.bit_length() - 1
    return f"{t}×2^{exponent}" if n == 1 << exponent else f"{t}×{n}"


def plot(results: dict, path: Path) -> Path:
    """Draws ``results`` (bench.py's JSON) to ``path``; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    rows = [r for r in results["rows"] if r.get("ms") is not None]
    modes = [m for m in ("fwd", "fwd+bwd") if any(r["mode"] == m for r in rows)]
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    shapes = list(dict.fromkeys((r["T"], r["N"]) for r in rows))
    if not rows:
        raise ValueError("no timed rows to plot")

    fig, axes = plt.subplots(len(modes), len(dtypes), squeeze=False, sharey=True,
                             figsize=(1.0 + 0.9 * len(shapes) * len(dtypes), 3.2 * len(modes)))
    width = 0.8 / len(impls)
    for i, mode in enumerate(modes):
        for j, dtype in enumerate(dtypes):
            ax = axes[i][j]
            for k, impl in enumerate(impls):
                xs, ys = [], []
                for s, (t, n) in enumerate(shapes):
                    match = [r for r in rows if (r["mode"], r["dtype"], r["impl"], r["T"], r["N"])
                             == (mode, dtype, impl, t, n)]
                    if match:
                        xs.append(s + (k - (len(impls) - 1) / 2) * width)
                        ys.append(match[0]["x_floor"])
                ax.bar(xs, ys, width, label=impl, color=IMPL_COLORS.get(impl))
            ax.axhline(1.0, color="black", linestyle="--", linewidth=0.8)
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(ticker.NullFormatter())
            ax.set_xticks(range(len(shapes)))
            ax.set_xticklabels([shape_label(t, n) for t, n in shapes], rotation=30, fontsize=8)
            ax.set_title(f"{mode}, {dtype}", fontsize=10)
            ax.grid(axis="y", which="both", alpha=0.3)
            if j == 0:
                ax.set_ylabel("time / floor (log)")
    axes[0][0].legend(fontsize=8)
    bandwidth = results.get("bandwidth", {}).get("copy_GBps")
    fig.suptitle(f"QIF multistep on {results.get('device', '?')}: time over the memory floor"
                 + (f" (copy {bandwidth:.0f} GB/s)" if bandwidth else ""), fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    source = Path(argv[0])
    target = Path(argv[1]) if len(argv) > 1 else source.with_suffix(".png")
    print(plot(json.loads(source.read_text()), target))


if __name__ == "__main__":
    main(sys.argv[1:])
