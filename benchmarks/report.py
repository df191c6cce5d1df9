"""How the benchmark's results are written: markdown tables, JSON, the plot hook.

Why this module exists: bench.py writes its results, and rewrites them from an earlier run's
JSON (``--render``, with ``--kernels`` adding Nsight Compute kernel times from
kernel_profile.py's CSV), through the same functions; cpu_bench.py reuses the small formatting
helpers and ``versions``. Outputs, in --out-dir: <name>.md (tables, with geometric means over
the shapes), <name>.json (every number, versions, bandwidth), <name>.png (plot.py).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from implementations import JAXQIF
from problem import shape_n


def fmt(value, digits=3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"



def geometric_mean(values: list) -> float | None:
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def attach_kernel_times(results: dict, csv_path: Path) -> None:
    """Adds kernel_ms (the sum of a call's kernels under Nsight Compute) and its ratio to the
    floor to jaxqif's rows, from kernel_profile.py's CSV."""
    import kernel_profile

    kernels = {(c["T"], c["N"], c["dtype"], c["mode"]): c["us"] / 1e3
               for c in kernel_profile.calls(csv_path)}
    for row in results["rows"]:
        ms = kernels.get((row["T"], row["N"], row["dtype"], row["mode"]))
        if row["impl"] == JAXQIF and ms is not None:
            row.update(kernel_ms=ms, x_floor_kernels=ms / row["floor_ms"])
    results["kernels_source"] = (f"{csv_path.name}: Nsight Compute, each kernel alone after a "
                                 "cache flush, summed per call (kernel_profile.py)")


def geometric_means(groups: dict, baselines: list) -> list:
    """Markdown lines: per dtype and mode, the geometric mean over the shapes of jaxqif's
    multiple of the floor and of its speedup over each baseline (where both were measured)."""
    per_kind: dict = {}
    for (_, _, dtype, mode), group in groups.items():
        if JAXQIF not in group or group[JAXQIF]["ms"] is None:
            continue
        kind = per_kind.setdefault((dtype, mode),
                                   {"kernels": [], "floor": [], **{b: [] for b in baselines}})
        kind["floor"].append(group[JAXQIF]["x_floor"])
        if group[JAXQIF].get("x_floor_kernels"):
            kind["kernels"].append(group[JAXQIF]["x_floor_kernels"])
        for b in baselines:
            if b in group and group[b].get("speedup"):
                kind[b].append(group[b]["speedup"])
    if not per_kind:
        return []
    header = ["dtype", "mode", "jaxqif kernels × floor", "jaxqif × floor",
              *(f"vs {b}" for b in baselines)]
    lines = ["", "Geometric means over the shapes:", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (dtype, mode), kind in per_kind.items():
        cells = [geometric_mean(kind[k]) for k in ("kernels", "floor", *baselines)]
        lines.append("| " + " | ".join([dtype, mode, *(f"{fmt(c, 2)}x" if c else "—"
                                                        for c in cells)]) + " |")
    return lines


def markdown(results: dict) -> str:
    """Header, the long table (one row per implementation) and a wide summary table."""
    rows = results["rows"]
    bw = results["bandwidth"]
    lines = [
        f"# jaxqif benchmark: {results['device']} ({results['date']})",
        "",
        f"jax {results['versions'].get('jax')}, jaxlib {results['versions'].get('jaxlib')}; "
        + ", ".join(f"{k} {v}" for k, v in results["versions"].items()
                    if k not in ("jax", "jaxlib")),
        f"Copy bandwidth (read + write): {bw['copy_GBps']:.0f} GB/s "
        f"({', '.join(f'{k} {v:.0f}' for k, v in bw['measured_GBps'].items())}). "
        f"Floor = bytes / that rate (fwd 8|4 B/elem, fwd+bwd 24|16 B/elem for f32|half).",
        f"SpikingJelly: {results['spikingjelly']}.",
        f"Timing: {results['timing_method']}",
        f"Dispatch: a jitted copy of a tiny array takes {fmt(results.get('dispatch_ms'), 4)} ms "
        "per call back to back on this host; no jitted call is faster end to end.",
        "",
        "| T | N | dtype | mode | impl | ms | ms (1 call) | floor ms | × floor | jaxqif speedup |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ms = fmt(r["ms"], 4) if r["ms"] is not None else (r["note"] or "—")
        speedup = f"{r['speedup']:.2f}x" if r.get("speedup") else "—"
        lines.append(f"| {r['T']} | {shape_n(r['N'])} | {r['dtype']} | {r['mode']} | {r['impl']} "
                     f"| {ms} | {fmt(r['ms_sync'], 4)} | {fmt(r['floor_ms'], 4)} "
                     f"| {fmt(r['x_floor'], 2)} | {speedup} |")

    impls = list(dict.fromkeys(r["impl"] for r in rows))
    baselines = [i for i in impls if i != JAXQIF]
    header = ["T", "N", "dtype", "mode", "floor ms", f"{JAXQIF} kernels", *impls,
              *(f"vs {b}" for b in baselines)]
    lines += ["", "Summary: ms (× floor), end to end but for jaxqif's kernels alone "
              f"({results.get('kernels_source', 'not profiled')}); speedup = baseline ms / "
              "jaxqif ms, end to end.", "",
              "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["T"], r["N"], r["dtype"], r["mode"]), {})[r["impl"]] = r
    for (t, n, dtype, mode), group in groups.items():
        floor = next(iter(group.values()))["floor_ms"]
        ours = group.get(JAXQIF, {})
        kernels = (f"{fmt(ours['kernel_ms'], 3)} ({fmt(ours['x_floor_kernels'], 2)}x)"
                   if ours.get("kernel_ms") is not None else "—")
        cells = [kernels] + [f"{fmt(group[i]['ms'], 3)} ({fmt(group[i]['x_floor'], 2)}x)"
                             if i in group and group[i]["ms"] is not None else "—"
                             for i in impls]
        speed = [f"{group[b]['speedup']:.2f}x" if b in group and group[b].get("speedup") else "—"
                 for b in baselines]
        lines.append("| " + " | ".join([str(t), shape_n(n), dtype, mode, fmt(floor, 3),
                                         *cells, *speed]) + " |")

    lines += geometric_means(groups, baselines)

    if results.get("examples"):
        lines += ["", "End-to-end training steps of the examples:", "",
                  "| example | backend | ms/step | ms (1 call) | speedup ffi vs jax |",
                  "|---|---|---|---|---|"]
        for e in results["examples"]:
            lines.append(f"| {e['example']} | {e['backend']} | {fmt(e['ms'])} | "
                         f"{fmt(e['ms_sync'])} | {fmt(e.get('speedup_ffi_vs_jax'), 2)} |")
    return "\n".join(lines) + "\n"


def versions(jax) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {"jax": jax.__version__, "python": sys.version.split()[0]}
    for package in ("jaxlib", "jax-cuda12-plugin", "jax-cuda13-plugin", "jaxqif", "numpy"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found


def write_results(results: dict, args: argparse.Namespace) -> str:
    """Writes <name>.md, .json and .png into args.out_dir; returns the markdown."""
    args.out_dir.mkdir(parents=True, exist_ok=True)
    table = markdown(results)
    (args.out_dir / f"{args.name}.md").write_text(table)
    (args.out_dir / f"{args.name}.json").write_text(json.dumps(results, indent=1) + "\n")
    if not args.no_plot:
        try:
            import plot

            plot.plot(results, args.out_dir / f"{args.name}.png")
        except Exception as error:  # noqa: BLE001
            print(f"plot failed: {type(error).__name__}: {error}", file=sys.stderr)
    return table
