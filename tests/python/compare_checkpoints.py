#!/usr/bin/python3
"""Compare two shardq checkpoints through their model.h5: every tensor (quantized groups'
datasets and attributes, float datasets) must be bit-identical, and the manifests equal
apart from timings, rank/shard placement, the output path, the resume flag and what the
run did (the "run" record: resumed, work counts).

usage: compare_checkpoints.py CKPT_A CKPT_B
Exit 0 when equal; otherwise prints the first differences and exits 1.
"""
import json
import sys

import h5py
import numpy as np


def walk(path, visit):
    """visit(name, obj) for every group and dataset of the checkpoint at `path`, through the
    external links of its model.h5 (which visititems does not follow)."""
    with h5py.File(f"{path}/model.h5", "r") as f:
        for key in f.keys():
            obj = f[key]
            visit(key, obj)
            if isinstance(obj, h5py.Group):
                obj.visititems(lambda n, o, key=key: visit(f"{key}/{n}", o))


def tensors(path):
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            out[name] = (obj.dtype.str, obj.shape, obj[...].tobytes())
        elif isinstance(obj, h5py.Group):
            for k, v in obj.attrs.items():
                out[f"{name}@{k}"] = ("attr", np.shape(v), np.asarray(v).tobytes())
    walk(path, visit)
    return out


def manifest(path):
    with open(f"{path}/manifest.json") as f:
        m = json.load(f)
    m["summary"].pop("phase_seconds", None)
    m["spec"].pop("output", None)
    m["spec"].pop("resume", None)
    m.pop("shards", None)
    m.pop("ranks", None)
    m.pop("run", None)
    for layer in m["layers"]:
        layer.pop("shard", None)
    return m


def main(a, b):
    ta, tb = tensors(a), tensors(b)
    problems = []
    if ta.keys() != tb.keys():
        problems.append(f"tensor sets differ: only in A {sorted(ta.keys() - tb.keys())[:5]}, only in B {sorted(tb.keys() - ta.keys())[:5]}")
    for name in sorted(ta.keys() & tb.keys()):
        if ta[name] != tb[name]:
            problems.append(f"{name}: contents differ")
    ma, mb = manifest(a), manifest(b)
    for key in sorted(set(ma) | set(mb)):
        if ma.get(key) != mb.get(key):
            problems.append(f"manifest field '{key}' differs")
    if problems:
        print("\n".join(problems[:20]))
        return 1
    print(f"identical: {len(ta)} datasets/attributes, manifests equal")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
