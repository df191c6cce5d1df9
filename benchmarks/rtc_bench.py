"""Benchmark: jaxqif's run-time compiled CUDA kernels (NVRTC through CuPy) against the nvcc-built
ones, side by side in one run.

Both libraries register the same FFI targets, so each runs in a process of its own
(`JAXQIF_CUDA_KERNELS=prebuilt` / `runtime`), alternating, `--rounds` times each, over bench.py's
grid (jaxqif and, with --arrays, jaxqif-arrays); a configuration's time is its fastest round's
median. The kernels were compiled (and cached) before the first timed round. Writes
<name>.md and <name>.json to --out-dir::

    python3 benchmarks/rtc_bench.py --out-dir benchmarks/results
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = ("prebuilt", "runtime")


def run_bench(source: str, out_dir: Path, name: str, extra: list[str]) -> dict:
    env = {**os.environ, "JAXQIF_CUDA_KERNELS": source}
    command = [sys.executable, str(HERE / "bench.py"), "--no-plot", "--out-dir", str(out_dir),
               "--name", name, *extra]
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    return json.loads((out_dir / f"{name}.json").read_text())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", type=Path, default=HERE / "results")
    p.add_argument("--name", default="rtc")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--arrays", action="store_true", help="also the per-neuron parameters' path")
    p.add_argument("--max-seconds", type=float, default=60.0, help="per bench.py run")
    p.add_argument("--shapes", help="bench.py's --shapes (default: its grid)")
    p.add_argument("--dtypes", help="bench.py's --dtypes (default: its)")
    args = p.parse_args(argv)
    impls = "jaxqif,jaxqif-arrays" if args.arrays else "jaxqif"
    extra = ["--impls", impls, "--max-seconds", str(args.max_seconds)]
    extra += ["--shapes", args.shapes] if args.shapes else []
    extra += ["--dtypes", args.dtypes] if args.dtypes else []
    times: dict[tuple, dict[str, list[float]]] = {}  # configuration -> library -> ms per round
    meta = None
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for source in SOURCES:
                result = run_bench(source, Path(tmp), f"{source}{round_}", extra)
                meta = meta or result
                for row in result["rows"]:
                    if row["ms"] is None:  # not run (bench.py's time limit)
                        continue
                    key = (row["T"], row["N"], row["dtype"], row["mode"], row["impl"])
                    times.setdefault(key, {}).setdefault(source, []).append(row["ms"])
    rows = []
    for (T, N, dtype, mode, impl), by_source in times.items():
        if len(by_source) == 2:
            fastest = {source: min(t) for source, t in by_source.items()}
            # how far apart a library's own rounds are: where that exceeds the ratio's distance
            # from 1, the ratio is the host's jitter (a call bound by its dispatch), not the kernels
            spread = {f"{source}_spread": max(t) / min(t) for source, t in by_source.items()}
            rows.append({"T": T, "N": N, "dtype": dtype, "mode": mode, "impl": impl, **fastest,
                         **spread, "ratio": fastest["runtime"] / fastest["prebuilt"]})
    ratios = [r["ratio"] for r in rows]
    geomean = math.exp(sum(map(math.log, ratios)) / len(ratios))
    lines = [f"# jaxqif: run-time compiled (NVRTC) vs nvcc-built kernels, {meta['device']} "
             f"({datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')})", "",
             f"{args.rounds} alternating rounds of bench.py per library (ms: a round's median "
             "of the timed batches, the fastest round kept); ratio = runtime / prebuilt; "
             "spread = a library's slowest round / its fastest.", "",
             "| T | N | dtype | mode | impl | prebuilt ms | runtime ms | ratio | "
             "prebuilt spread | runtime spread |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['T']} | {r['N']:,} | {r['dtype']} | {r['mode']} | {r['impl']} | "
                     f"{r['prebuilt']:.4f} | {r['runtime']:.4f} | {r['ratio']:.3f} | "
                     f"{r['prebuilt_spread']:.3f} | {r['runtime_spread']:.3f} |")
    lines += ["", f"Geometric mean of the ratios: {geomean:.3f}; range {min(ratios):.3f} - "
                  f"{max(ratios):.3f} over {len(rows)} configurations."]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    (args.out_dir / f"{args.name}.json").write_text(json.dumps(
        {"device": meta["device"], "versions": meta["versions"], "rounds": args.rounds,
         "rows": rows, "geomean": geomean}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
