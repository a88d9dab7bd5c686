"""Prints the kernel benchmark table: pair interactions per second and peak extra
memory for aits and the pure-torch reference, measured in the same run.

    python benchmarks/run.py [--sizes 256 1024 4096 16384] [--json out.json] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernels import (  # noqa: E402
    OPS,
    REFERENCE_MEMORY_LIMIT,
    Case,
    check_agreement,
    make_call,
    peak_extra_memory,
    reference_memory,
    time_call,
)


def measure(case: Case) -> dict:
    row = {"op": case.op, "impl": case.impl, "dtype": str(case.dtype).removeprefix("torch."),
           "n": case.n, "device": case.device}
    if case.impl == "reference" and reference_memory(case.n, case.dtype) > REFERENCE_MEMORY_LIMIT:
        return {**row, "status": "skipped (reference needs > 3 GB)"}
    try:
        call = make_call(case)
        seconds = time_call(call, case.device)
        peak = peak_extra_memory(call, case.device)
    except (torch.cuda.OutOfMemoryError, MemoryError, RuntimeError) as exc:  # reported, not fatal
        return {**row, "status": f"failed: {type(exc).__name__}"}
    return {**row, "status": "ok", "seconds": seconds,
            "pairs_per_s": case.n * case.n / seconds, "peak_extra_mb": peak / 2**20}


def fmt(row: dict) -> str:
    if row["status"] != "ok":
        return f"{row['op']:<17} {row['dtype']:<8} {row['n']:>6} {row['impl']:<9} {row['status']}"
    mem = "n/a" if math.isnan(row["peak_extra_mb"]) else f"{row['peak_extra_mb']:9.1f}"
    return (f"{row['op']:<17} {row['dtype']:<8} {row['n']:>6} {row['impl']:<9} "
            f"{row['pairs_per_s']:10.3e} {row['seconds'] * 1e3:10.3f} {mem:>9}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 4096, 16384])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--big-memory-n", type=int, default=65536,
                        help="N of the extra forward+backward float64 memory check (0 = skip)")
    args = parser.parse_args(argv)

    print(f"device: {args.device} ({platform.processor() or platform.machine()}), "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for dtype in (torch.float32, torch.float64):
        for op in OPS:
            print(f"agreement {op:<17} {str(dtype):<14} max rel diff vs reference (N=200): "
                  f"{check_agreement(op, 200, dtype, args.device):.2e}")
    header = f"{'op':<17} {'dtype':<8} {'N':>6} {'impl':<9} {'pairs/s':>10} {'ms/call':>10} {'peak MB':>9}"
    print(header)
    print("-" * len(header))
    rows = []
    for op in OPS:
        for dtype in (torch.float32, torch.float64):
            for n in args.sizes:
                for impl in ("aits", "reference"):
                    row = measure(Case(op, n, dtype, impl, args.device))
                    rows.append(row)
                    print(fmt(row), flush=True)
    if args.big_memory_n:
        row = measure(Case("forward+backward", args.big_memory_n, torch.float64, "aits", args.device))
        rows.append(row)
        print(fmt(row))
    ratios = {}
    for r in rows:
        if r["impl"] == "aits" and r["status"] == "ok":
            twin = next((x for x in rows if x["impl"] == "reference" and x["status"] == "ok"
                         and (x["op"], x["dtype"], x["n"]) == (r["op"], r["dtype"], r["n"])), None)
            if twin:
                ratios[f"{r['op']} {r['dtype']} N={r['n']}"] = twin["seconds"] / r["seconds"]
    print("\nspeed-up of aits over the reference (same run):")
    for key, value in ratios.items():
        print(f"  {key:<36} {value:8.1f}x")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "speedup": ratios}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
