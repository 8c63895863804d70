#!/usr/bin/python3
"""Checks a checkpoint written by a precision policy (coordinator/precision_policy.hpp).

usage: precision_check.py CKPT_DIR POLICY TARGET_BPW OPTIONS(comma list)

- manifest.json: spec.precision.policy is POLICY; summary.avg_bits equals the average
  recomputed here from modules[] (16 for kept linears) and is <= TARGET_BPW;
- every linear's bits is one of OPTIONS (16 = kept in floating point);
- within one layer's step: avg_bits > TARGET_BPW - max over layers of (the layer's linear
  parameters x the largest gap between adjacent options) / all parameters (when TARGET_BPW
  is within the options' range);
- every layer has finite lim and zd; policy sensitivity records sensitivity per option;
- lim / zd: the allocation follows the recorded scores (no layer at fewer bits is more
  important than a layer at more bits).
"""
import json
import math
import os
import sys


def main():
    ckpt, policy, target = sys.argv[1], sys.argv[2], float(sys.argv[3])
    options = sorted(int(x) for x in sys.argv[4].split(","))
    with open(os.path.join(ckpt, "manifest.json")) as f:
        m = json.load(f)
    errors = []
    if m["spec"]["precision"]["policy"] != policy:
        errors.append(f"policy {m['spec']['precision']['policy']} != {policy}")
    params = {}
    bits_total = 0.0
    total = 0
    layer_bits = {}
    for mod in m["modules"]:
        n = mod["shape"][0] * mod["shape"][1]
        b = min(mod["bits"], 16)
        if b not in options:
            errors.append(f"{mod['name']}: bits {b} not in options {options}")
        bits_total += b * n
        total += n
        params[mod["layer"]] = params.get(mod["layer"], 0) + n
        layer_bits.setdefault(mod["layer"], set()).add(b)
    avg = bits_total / total
    if abs(avg - m["summary"]["avg_bits"]) > 1e-9:
        errors.append(f"summary.avg_bits {m['summary']['avg_bits']} != recomputed {avg}")
    if not m["summary"]["avg_bits"] <= target:
        errors.append(f"avg_bits {m['summary']['avg_bits']} above target {target}")
    gap = max(b - a for a, b in zip(options, options[1:]))
    step = max(params.values()) * gap / total
    if options[0] <= target <= options[-1] and not avg > target - step:
        errors.append(f"avg_bits {avg} not within one layer step ({step}) of target {target}")
    for l in m["layers"]:
        for key in ("lim", "zd"):
            if not math.isfinite(l[key]):
                errors.append(f"layer {l['index']}: {key} = {l[key]}")
        if policy == "sensitivity":
            keys = sorted(int(k) for k in l["sensitivity"])  # empty: every linear fixed by an override
            if keys not in ([], options) or any(v < 0 or not math.isfinite(v) for v in l["sensitivity"].values()):
                errors.append(f"layer {l['index']}: sensitivity {l['sensitivity']} for options {options}")
    if policy in ("lim", "zd", "random"):
        for l, bs in layer_bits.items():
            if len(bs) != 1:
                errors.append(f"layer {l}: linears at different bits {sorted(bs)} under a per-layer policy")
    if policy in ("lim", "zd"):
        score = {l["index"]: l[policy] for l in m["layers"]}
        sign = 1 if policy == "lim" else -1  # importance: high LIM, low ZD
        for a in score:
            for b in score:
                if max(layer_bits[a]) < max(layer_bits[b]) and sign * score[a] > sign * score[b]:
                    errors.append(f"layer {a} (score {score[a]}) got fewer bits than less important layer {b} ({score[b]})")
    if errors:
        print("\n".join(errors))
        sys.exit(1)
    print(f"ok {policy}: avg_bits {avg:.4f} <= {target} (step {step:.4f})")


main()
