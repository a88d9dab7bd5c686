"""Prints the kernel benchmark table: pair interactions per second and peak extra
memory for aits (on the CPU each pair kernel, "rsqrt" and "divide", with the
instruction set it was built for and the fraction of the FMA peak reached) and
the pure-torch reference, measured in the same run.

    python benchmarks/run.py [--sizes 256 1024 4096 16384] [--json out.json] [--device cpu]
                             [--no-reference] [--ranges]
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
import aits  # noqa: E402
from kernels import (  # noqa: E402
    FLOPS_PER_PAIR,
    OPS,
    PAIR_KERNELS,
    REFERENCE_MEMORY_LIMIT,
    Case,
    check_agreement,
    fma_peak,
    make_call,
    peak_extra_memory,
    reference_memory,
    representable_range,
    time_call,
)


def impl_name(case: Case) -> str:
    return case.impl if case.kernel is None else f"{case.impl}[{case.kernel}]"


def measure_interleaved(cases: list[Case], rounds: int = 5) -> list[dict]:
    """measure() for cases that are compared with each other (the pair kernels),
    their timed calls alternated over ``rounds`` rounds and the best kept, so that
    load from other processes on the machine hits every case alike."""
    rows = [measure(c) for c in cases]
    calls = [make_call(c) for c in cases]
    for _ in range(rounds - 1):
        for row, call in zip(rows, calls):
            if row["status"] == "ok":
                row["seconds"] = min(row["seconds"], time_call(call, row["device"], min_time=0.1))
    for row, case in zip(rows, cases):
        if row["status"] == "ok":
            scale = case.n * case.n / row["seconds"] / row["pairs_per_s"]
            row["pairs_per_s"] *= scale
            if "fma_peak_fraction" in row:
                row["fma_peak_fraction"] *= scale
    return rows


def measure(case: Case) -> dict:
    row = {"op": case.op, "impl": impl_name(case), "dtype": str(case.dtype).removeprefix("torch."),
           "n": case.n, "device": case.device}
    if case.impl == "reference" and reference_memory(case.n, case.dtype) > REFERENCE_MEMORY_LIMIT:
        return {**row, "status": "skipped (reference needs > 3 GB)"}
    try:
        call = make_call(case)
        seconds = time_call(call, case.device)
        peak = peak_extra_memory(call, case.device)
    except (torch.cuda.OutOfMemoryError, MemoryError, RuntimeError) as exc:  # reported, not fatal
        return {**row, "status": f"failed: {type(exc).__name__}"}
    row = {**row, "status": "ok", "seconds": seconds,
           "pairs_per_s": case.n * case.n / seconds, "peak_extra_mb": peak / 2**20}
    if case.kernel is not None:
        peak_flops, _ = fma_peak(torch.get_num_threads(), case.dtype)
        row["isa"] = aits.ops.simd_instruction_set()
        row["fma_peak_fraction"] = (row["pairs_per_s"] * FLOPS_PER_PAIR[case.op] / peak_flops
                                    if peak_flops > 0 else float("nan"))
    return row


def fmt(row: dict) -> str:
    if row["status"] != "ok":
        return f"{row['op']:<17} {row['dtype']:<8} {row['n']:>6} {row['impl']:<14} {row['status']}"
    mem = "n/a" if math.isnan(row["peak_extra_mb"]) else f"{row['peak_extra_mb']:9.1f}"
    isa = row.get("isa", "-")
    frac = f"{100 * row['fma_peak_fraction']:6.1f}%" if "fma_peak_fraction" in row else "      -"
    return (f"{row['op']:<17} {row['dtype']:<8} {row['n']:>6} {row['impl']:<14} "
            f"{row['pairs_per_s']:10.3e} {row['seconds'] * 1e3:10.3f} {mem:>9} {isa:>7} {frac}")


def kernel_speedups(rows: list[dict]) -> dict[str, float]:
    """rsqrt over divide, per (op, dtype, N), from rows of the same run."""
    out = {}
    for r in rows:
        if r["impl"] == "aits[rsqrt]" and r["status"] == "ok":
            twin = next((x for x in rows if x["impl"] == "aits[divide]" and x["status"] == "ok"
                         and (x["op"], x["dtype"], x["n"]) == (r["op"], r["dtype"], r["n"])), None)
            if twin:
                out[f"{r['op']} {r['dtype']} N={r['n']}"] = twin["seconds"] / r["seconds"]
    return out


def print_ranges() -> None:
    """Separations (decades) over which two unit masses get the acceleration,
    potential and free-fall time right (float32 1e-6, float64 1e-14 relative)."""
    for kernel in PAIR_KERNELS:
        with aits.ops.using_pair_kernel(kernel):
            for dtype, tol in ((torch.float32, 1e-6), (torch.float64, 1e-14)):
                ranges = {q: representable_range(dtype, tol, q) for q in ("acc", "potential", "freefall")}
                text = ", ".join(f"{q} {lo:.0e}..{hi:.0e}" for q, (lo, hi) in ranges.items())
                print(f"range {kernel:<6} {str(dtype):<14} {text}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 4096, 16384])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--big-memory-n", type=int, default=65536,
                        help="N of the extra forward+backward float64 memory check (0 = skip)")
    parser.add_argument("--no-reference", action="store_true", help="skip the pure-torch rows")
    parser.add_argument("--rounds", type=int, default=5,
                        help="alternating timing rounds of the aits kernels (best kept)")
    parser.add_argument("--ranges", action="store_true",
                        help="also print the separations each dtype represents (numerics.md)")
    args = parser.parse_args(argv)

    cpu = args.device == "cpu"
    print(f"device: {args.device} ({platform.processor() or platform.machine()}), "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    if cpu:
        print(f"CPU pair kernels: {', '.join(PAIR_KERNELS)}; instruction set "
              f"{aits.ops.simd_instruction_set()}; FMA peak float64 = "
              f"{fma_peak(torch.get_num_threads(), torch.float64)[1]}")
    if args.ranges:
        print_ranges()
    for dtype in (torch.float32, torch.float64):
        for op in OPS:
            for kernel in PAIR_KERNELS if cpu else (None,):
                print(f"agreement {op:<17} {str(dtype):<14} {kernel or '':<6} max rel diff vs "
                      f"reference (N=200): {check_agreement(op, 200, dtype, args.device, kernel):.2e}")
    header = (f"{'op':<17} {'dtype':<8} {'N':>6} {'impl':<14} {'pairs/s':>10} {'ms/call':>10} "
              f"{'peak MB':>9} {'isa':>7} {'%FMA pk':>7}")
    print(header)
    print("-" * len(header))
    rows = []
    for op in OPS:
        for dtype in (torch.float32, torch.float64):
            for n in args.sizes:
                cases = [Case(op, n, dtype, "aits", args.device, k) for k in PAIR_KERNELS] if cpu \
                    else [Case(op, n, dtype, "aits", args.device)]
                group = measure_interleaved(cases, args.rounds)
                if not args.no_reference:
                    group.append(measure(Case(op, n, dtype, "reference", args.device)))
                for row in group:
                    rows.append(row)
                    print(fmt(row), flush=True)
    if args.big_memory_n:
        row = measure(Case("forward+backward", args.big_memory_n, torch.float64, "aits", args.device,
                           "rsqrt" if cpu else None))
        rows.append(row)
        print(fmt(row))
    speedups = kernel_speedups(rows)
    if speedups:
        print("\nspeed-up of the rsqrt kernel over the divide kernel (same run):")
        for key, value in speedups.items():
            print(f"  {key:<36} {value:8.2f}x")
    ratios = {}
    for r in rows:
        if r["impl"].startswith("aits") and r["status"] == "ok":
            twin = next((x for x in rows if x["impl"] == "reference" and x["status"] == "ok"
                         and (x["op"], x["dtype"], x["n"]) == (r["op"], r["dtype"], r["n"])), None)
            if twin:
                ratios[f"{r['op']} {r['dtype']} N={r['n']} {r['impl']}"] = twin["seconds"] / r["seconds"]
    if ratios:
        print("\nspeed-up of aits over the reference (same run):")
        for key, value in ratios.items():
            print(f"  {key:<48} {value:8.1f}x")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "speedup": ratios,
                                         "kernel_speedup": speedups}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
