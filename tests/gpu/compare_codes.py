#!/usr/bin/python3
"""Agreement of the quantized integers of two shardq checkpoints of the same job (CPU and
GPU): per quantized linear, the fraction of equal codes (unpacked from qweight, a
little-endian bit stream per row), the histogram of code differences, the fraction of equal
fp16 scales and the two rel_errors (manifest.json); overall, the fraction of equal codes must
be at least MIN_FRACTION.

usage: compare_codes.py CKPT_A CKPT_B MIN_FRACTION [--only REGEX]
                        [--rel-error-mean-within TOL] [--rel-error-each-within TOL]
  --only REGEX                  MIN_FRACTION holds for the linears whose name matches REGEX
                                (the table and the overall fraction still cover all)
  --rel-error-mean-within TOL   mean over linears of rel_err B / rel_err A within 1 ± TOL
  --rel-error-each-within TOL   every linear's rel_err B / rel_err A within 1 ± TOL
"""
import argparse
import json
import os
import re
import sys
from collections import Counter

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from compare_checkpoints import walk  # noqa: E402


def unpack(qweight, cols, bits):
    """codes [rows, cols] of a [rows, words] uint32 bit stream, code c at bits [c*bits, (c+1)*bits)."""
    rows = qweight.shape[0]
    bitstream = np.unpackbits(qweight.astype("<u4").view(np.uint8).reshape(rows, -1), axis=1, bitorder="little")
    bitstream = bitstream[:, : cols * bits].reshape(rows, cols, bits).astype(np.uint16)
    return (bitstream << np.arange(bits, dtype=np.uint16)).sum(axis=2)


def quantized_linears(path):
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Group) and "qweight" in obj:
            a = dict(obj.attrs)
            out[name] = (unpack(obj["qweight"][...], int(a["shape"][1]), int(a["bits"])), obj["scales"][...])
    walk(path, visit)
    return out


def rel_errors(path):
    with open(f"{path}/manifest.json") as f:
        return {m["name"]: m.get("rel_error") for m in json.load(f)["modules"]}


parser = argparse.ArgumentParser(description="agreement of the codes of two shardq checkpoints")
parser.add_argument("ckpt_a")
parser.add_argument("ckpt_b")
parser.add_argument("min_fraction", type=float)
parser.add_argument("--only", default=None)
parser.add_argument("--rel-error-mean-within", type=float, default=None)
parser.add_argument("--rel-error-each-within", type=float, default=None)
args = parser.parse_args()

a, b = quantized_linears(args.ckpt_a), quantized_linears(args.ckpt_b)
assert a.keys() == b.keys() and a, f"the checkpoints hold different linears: {sorted(a)[:3]} vs {sorted(b)[:3]}"
ea, eb = rel_errors(args.ckpt_a), rel_errors(args.ckpt_b)
only = re.compile(args.only) if args.only else None
equal = total = selected_equal = selected_total = 0
diffs = Counter()
ratios = {}
print(f"{'linear':48}{'codes equal':>14}{'scales equal':>14}{'rel_err A':>12}{'rel_err B':>12}")
for name in sorted(a):
    (ca, sa), (cb, sb) = a[name], b[name]
    d = cb.astype(np.int32) - ca.astype(np.int32)
    equal += int((d == 0).sum())
    total += d.size
    if only is None or only.search(name):
        selected_equal += int((d == 0).sum())
        selected_total += d.size
    diffs.update(Counter(d[d != 0].tolist()))
    module = name.split("/")[-1]
    ra, rb = ea.get(module), eb.get(module)
    if ra and rb is not None:
        ratios[module] = rb / ra
    print(f"{name:48}{(d == 0).mean():>14.6f}{(sa == sb).mean():>14.6f}"
          f"{ra if ra is not None else float('nan'):>12.6f}{rb if rb is not None else float('nan'):>12.6f}")
fraction = equal / total
print(f"codes equal: {equal} of {total} = {fraction:.6f}; differences by value: {dict(sorted(diffs.items()))}")
if only is not None:
    assert selected_total, f"no linear matches --only '{args.only}'"
    fraction = selected_equal / selected_total
    print(f"codes equal in the linears matching '{args.only}': {selected_equal} of {selected_total} = {fraction:.6f}")
assert fraction >= args.min_fraction, f"only {fraction:.6f} of the codes agree (required {args.min_fraction})"
if args.rel_error_mean_within is not None or args.rel_error_each_within is not None:
    assert len(ratios) == len(a), f"rel_err missing for {len(a) - len(ratios)} linears in a manifest"
    mean = sum(ratios.values()) / len(ratios)
    worst = max(ratios, key=lambda m: abs(ratios[m] - 1.0))
    print(f"rel_err B / A: mean {mean:.5f}, furthest from 1 {ratios[worst]:.5f} ({worst})")
    if args.rel_error_mean_within is not None:
        assert abs(mean - 1.0) <= args.rel_error_mean_within, \
            f"mean rel_err ratio {mean:.5f} is not within 1 ± {args.rel_error_mean_within}"
    if args.rel_error_each_within is not None:
        assert abs(ratios[worst] - 1.0) <= args.rel_error_each_within, \
            f"rel_err ratio of {worst} {ratios[worst]:.5f} is not within 1 ± {args.rel_error_each_within}"
