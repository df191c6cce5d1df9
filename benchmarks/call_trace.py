"""Where a jitted call's time goes between the host and the GPU: JAX's profiler (CUPTI) traces
`--calls` back-to-back calls of jaxqif's inference forward (or a training step), and this prints,
per process of the trace (the host's threads, each GPU stream), every event's count and mean
duration, and the GPU's idle time between consecutive kernels. Complements kernel_profile.py
(each kernel's own time, alone under Nsight Compute) and bench.py (end-to-end time per call): a
call bound by its host shows up here as kernels with idle gaps between them.

    python3 benchmarks/call_trace.py --shapes 1024x2^14 --dtypes bfloat16 [--modes fwd,fwd+bwd]

Run it once per library (JAXQIF_CUDA_KERNELS=prebuilt or runtime) to compare them.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from problem import make_inputs, parse_shape  # noqa: E402


def summarize(trace_path: str, top: int) -> str:
    events = json.load(gzip.open(trace_path))["traceEvents"]
    process = {e["pid"]: e["args"]["name"] for e in events
               if e.get("ph") == "M" and e.get("name") == "process_name"}
    spans = collections.defaultdict(list)  # (process, event name) -> durations (us)
    kernels = collections.defaultdict(list)  # GPU process -> (start, end) of each kernel
    for e in events:
        if e.get("ph") != "X":
            continue
        where = process.get(e["pid"], str(e["pid"]))
        spans[where, e["name"]].append(e["dur"])
        if "GPU" in where and "args" in e and "grid" in json.dumps(e["args"]).lower():
            kernels[where].append((e["ts"], e["ts"] + e["dur"]))
    lines = []
    for where in sorted({w for w, _ in spans}):
        rows = sorted(((sum(d), name, d) for (w, name), d in spans.items() if w == where),
                      reverse=True)[:top]
        lines.append(f"  [{where}]")
        for total, name, d in rows:
            lines.append(f"    {len(d):5d} x {statistics.mean(d):9.2f} us  {name[:100]}")
    for where, spans_ in kernels.items():
        spans_.sort()
        gaps = [b[0] - a[1] for a, b in zip(spans_, spans_[1:])]
        if gaps:
            lines.append(f"  [{where}] {len(spans_)} kernels; idle between consecutive ones: "
                         f"median {statistics.median(gaps):.2f} us, mean "
                         f"{statistics.mean(gaps):.2f} us")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", type=lambda s: [parse_shape(x) for x in s.split(",")],
                   default=[parse_shape("1024x2^14")])
    p.add_argument("--dtypes", type=lambda s: s.split(","), default=["bfloat16"])
    p.add_argument("--modes", type=lambda s: s.split(","), default=["fwd"])
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--top", type=int, default=12, help="events listed per process")
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp

    import jaxqif
    from jaxqif import _library

    infer = jax.jit(lambda x: jaxqif.qif_multistep(x, backend="ffi")[0])

    def train(x, g):  # as bench.py's fwd+bwd: the spikes and grad_x of sum(spikes * g)
        spikes, vjp = jax.vjp(lambda x: jaxqif.qif_multistep(x, backend="ffi")[0], x)
        return spikes, vjp(g)[0]

    train = jax.jit(train)
    print(f"CUDA kernels: {_library.kernel_source('cuda')}; {jax.devices()[0].device_kind}")
    for t, n in args.shapes:
        for dtype in args.dtypes:
            (x,), (g,) = make_inputs(jax, jnp, t, n, dtype, 1)
            for mode in args.modes:
                fn, fn_args = (infer, (x,)) if mode == "fwd" else (train, (x, g))
                for _ in range(20):  # compile and warm up outside the trace
                    jax.block_until_ready(fn(*fn_args))
                with tempfile.TemporaryDirectory() as tmp:
                    with jax.profiler.trace(tmp, create_perfetto_trace=True):
                        jax.block_until_ready([fn(*fn_args) for _ in range(args.calls)])
                    trace = glob.glob(f"{tmp}/**/perfetto_trace.json.gz", recursive=True)[0]
                    print(f"\n{mode} T={t} N={n} {dtype}, {args.calls} calls:")
                    print(summarize(trace, args.top))


if __name__ == "__main__":
    main()
