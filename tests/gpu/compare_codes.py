#!/usr/bin/python3
"""Agreement of the quantized integers of two shardq checkpoints of the same job (CPU and
GPU): per quantized linear, the fraction of equal codes (unpacked from qweight, a
little-endian bit stream per row), the histogram of code differences, the fraction of equal
fp16 scales and the two rel_errors; overall, the fraction of equal codes must be at least
MIN_FRACTION.

usage: compare_codes.py CKPT_A CKPT_B MIN_FRACTION
"""
import json
import os
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


a, b = quantized_linears(sys.argv[1]), quantized_linears(sys.argv[2])
min_fraction = float(sys.argv[3])
assert a.keys() == b.keys() and a, f"the checkpoints hold different linears: {sorted(a)[:3]} vs {sorted(b)[:3]}"
ea, eb = rel_errors(sys.argv[1]), rel_errors(sys.argv[2])
equal = total = 0
diffs = Counter()
print(f"{'linear':48}{'codes equal':>14}{'scales equal':>14}{'rel_err A':>12}{'rel_err B':>12}")
for name in sorted(a):
    (ca, sa), (cb, sb) = a[name], b[name]
    d = cb.astype(np.int32) - ca.astype(np.int32)
    equal += int((d == 0).sum())
    total += d.size
    diffs.update(Counter(d[d != 0].tolist()))
    module = name.split("/")[-1]
    print(f"{name:48}{(d == 0).mean():>14.6f}{(sa == sb).mean():>14.6f}"
          f"{ea.get(module, float('nan')):>12.6f}{eb.get(module, float('nan')):>12.6f}")
fraction = equal / total
print(f"codes equal: {equal} of {total} = {fraction:.6f}; differences by value: {dict(sorted(diffs.items()))}")
assert fraction >= min_fraction, f"only {fraction:.6f} of the codes agree (required {min_fraction})"
