#!/usr/bin/python3
"""The mixed-precision experiments of issue 7 on stories260K, written as a report directory.

usage: precision_experiments.py --shardq BIN --shared DIR --out REPORT_DIR
           [--work DIR] [--samples N] [--seq-len N] [--max-windows N] [--only key,partial,order,methods]

Every job is a `shardq quantize` run (job spec JSON files written to WORK/specs), evaluated with
`shardq eval --json --ref ORIGINAL` on data/tinystories/eval.txt (first --max-windows windows of
256 tokens). Calibration: data/tinystories/calib.txt, --samples windows of --seq-len tokens.
GPTQ and RTN use group_size 32 (stories260K's linears have 64 or 172 input columns).

Experiments (REPORT_DIR/report.md, results.json, *.svg):
  key      at 3.0 and 3.5 average bits: sensitivity against lim, zd, random (seeds 0, 1, 2) with
           bit options {2, 4} (the paper's two widths), the same four policies with options
           {2, 3, 4, 8} (random: seed 0), and uniform (3 bits, the uniform width at or below
           both targets; 4 bits for reference).
  partial  Kim & Lim's partial quantization: each third of the layers kept in 16 bits, the rest
           GPTQ 4-bit, against uniform GPTQ 8-bit (the same average bits) and the original.
  order    Dumitru et al.'s variable layer-wise bits: layers move one by one from 4 to 2 bits in
           LIM, ZD, random (3 seeds) and measured-sensitivity order (lim/zd/random are the
           policies at targets 4 − 2k/L; the sensitivity order, by each layer's measured
           KL(2) − KL(4), is written as overrides), plus the sensitivity knapsack at each target.
  methods  whole-model int8, attention-only and MLP-only int8, GPTQ 8, GPTQ 4, RTN 4, NF4.
Timing columns (load latency, tokens/s of eval) come from wall-clock times of two evals,
with 1 and with --max-windows windows: tokens/s = Δtokens / Δtime, load = t1 − tokens1 / rate.
They are indicative only (a shared machine).
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

STORIES = "models/stories260K"
CALIB = "data/tinystories/calib.txt"
EVAL = "data/tinystories/eval.txt"


class Runner:
    def __init__(self, args):
        self.bin = args.shardq
        self.shared = args.shared
        self.work = args.work
        self.samples = args.samples
        self.seq_len = args.seq_len
        self.max_windows = args.max_windows
        self.model = os.path.join(self.work, "model")
        self.results = {}
        os.makedirs(os.path.join(self.work, "specs"), exist_ok=True)
        self.cache_path = os.path.join(self.work, "results_cache.json")
        if os.path.exists(self.cache_path):
            with open(self.cache_path) as f:
                self.results = json.load(f)

    def run(self, cmd):
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}\n{r.stderr}")
        return r.stdout

    def convert(self):
        if not os.path.exists(os.path.join(self.model, "config.json")):
            self.run([self.bin, "convert", "llama2c", os.path.join(self.shared, STORIES, "stories260K.bin"),
                      "--tokenizer", os.path.join(self.shared, STORIES, "tok512.bin"), "--output", self.model])

    def evaluate(self, path):
        text = os.path.join(self.shared, EVAL)
        base = [self.bin, "eval", "--model", path, "--text", text, "--json", "--ref", self.model]
        t = time.monotonic()
        one = json.loads(self.run(base + ["--max-windows", "1"]))
        t1 = time.monotonic() - t
        t = time.monotonic()
        full = json.loads(self.run(base + ["--max-windows", str(self.max_windows)]))
        tn = time.monotonic() - t
        # Both evals run the reference model too; the rate is of the pair, halved per model.
        rate = (full["tokens"] - one["tokens"]) / max(tn - t1, 1e-9) * 2.0
        full["tokens_per_s"] = rate
        full["load_s"] = max(0.0, t1 - 2.0 * one["tokens"] / rate) / 2.0
        return full

    def job(self, name, quant=None, precision=None):
        """Quantizes (cached by name) and evaluates; returns the result row."""
        if name in self.results:
            return self.results[name]
        out = os.path.join(self.work, "ckpt", name)
        spec = {"model": self.model, "output": out,
                "calibration": {"path": os.path.join(self.shared, CALIB), "samples": self.samples,
                                "seq_len": self.seq_len},
                "quant": dict({"method": "gptq", "bits": 4, "group_size": 32}, **(quant or {})),
                "precision": precision or {}}
        spec_path = os.path.join(self.work, "specs", name + ".json")
        with open(spec_path, "w") as f:
            json.dump(spec, f, indent=1)
        t = time.monotonic()
        self.run([self.bin, "quantize", "--config", spec_path, "--force", "--quiet"])
        quant_s = time.monotonic() - t
        with open(os.path.join(out, "manifest.json")) as f:
            m = json.load(f)
        row = {"name": name, "avg_bits": m["summary"]["avg_bits"], "avg_bits_effective": m["summary"]["avg_bits_effective"],
               "bytes": m["summary"]["bytes"], "quantize_s": quant_s,
               "layers": [{k: l[k] for k in ("index", "lim", "zd", "sensitivity")} for l in m["layers"]],
               "layer_bits": layer_bits(m), "phase_seconds": m["summary"]["phase_seconds"]}
        row.update(self.evaluate(out))
        self.results[name] = row
        with open(self.cache_path, "w") as f:
            json.dump(self.results, f)
        print(f"{name:28s} bits {row['avg_bits']:.3f}  ppl {row['ppl']:.4f}  kl {row['kl']:.5f}", flush=True)
        return row

    def original(self):
        if "original" not in self.results:
            row = {"name": "original", "avg_bits": 16.0 if self.model_dtype_bits() == 16 else 32.0}
            row["bytes"] = sum(os.path.getsize(os.path.join(self.model, f)) for f in os.listdir(self.model)
                               if f.endswith(".safetensors"))
            row["avg_bits_effective"] = row["avg_bits"]
            row.update(self.evaluate(self.model))
            self.results["original"] = row
        return self.results["original"]

    def model_dtype_bits(self):
        with open(os.path.join(self.model, "config.json")) as f:
            dtype = json.load(f).get("torch_dtype", "float32")
        return 16 if dtype in ("float16", "bfloat16") else 32


def layer_bits(m):
    bits = {}
    for mod in m["modules"]:
        bits.setdefault(mod["layer"], []).append(min(mod["bits"], 16))
    return [bits[l] for l in sorted(bits)]


# ---------------------------------------------------------------- experiments
def exp_key(r):
    rows = []
    for target in (3.0, 3.5):
        for policy in ("sensitivity", "lim", "zd"):
            rows.append((target, policy, r.job(f"{policy}-{target}", precision={
                "policy": policy, "target_bpw": target, "bit_options": [2, 4]})))
        for seed in (0, 1, 2):
            rows.append((target, f"random seed {seed}", r.job(f"random{seed}-{target}", precision={
                "policy": "random", "target_bpw": target, "bit_options": [2, 4], "seed": seed})))
        for policy in ("sensitivity", "lim", "zd", "random"):
            rows.append((target, f"{policy} {{2,3,4,8}}", r.job(f"{policy}-multi-{target}", precision={
                "policy": policy, "target_bpw": target, "bit_options": [2, 3, 4, 8]})))
        rows.append((target, "uniform 3-bit", r.job("uniform-3", quant={"bits": 3})))
    rows.append((None, "uniform 4-bit (reference)", r.job("uniform-4", quant={"bits": 4})))
    return rows


def n_layers(r):
    with open(os.path.join(r.model, "config.json")) as f:
        return json.load(f)["num_hidden_layers"]


def exp_partial(r):
    n = n_layers(r)
    thirds = [(i * n // 3, (i + 1) * n // 3 - 1) for i in range(3)]
    rows = [("original", r.original())]
    for a, b in thirds:
        ranges = f"{a}-{b}"
        rows.append((f"layers {ranges} fp16, rest GPTQ 4", r.job(f"keep-{ranges}", precision={
            "policy": "keep", "keep_fp16_layers": ranges})))
    rows.append(("uniform GPTQ 8", r.job("uniform-8", quant={"bits": 8})))
    return rows


def exp_order(r):
    n = n_layers(r)
    curves = {}
    for k in range(n + 1):
        target = 4.0 - 2.0 * k / n
        for policy, seeds in (("lim", [None]), ("zd", [None]), ("random", [0, 1, 2]), ("sensitivity", [None])):
            for seed in seeds:
                label = policy if seed is None else f"random{seed}"
                if k == 0:
                    row = r.job("uniform-4", quant={"bits": 4})
                elif k == n:
                    row = r.job("uniform-2", quant={"bits": 2})
                else:
                    prec = {"policy": policy, "target_bpw": target, "bit_options": [2, 4]}
                    if seed is not None:
                        prec["seed"] = seed
                    name = f"order-{label}-{k}" if policy != "sensitivity" else f"order-knapsack-{k}"
                    row = r.job(name, precision=prec)
                curves.setdefault(label if policy != "sensitivity" else "sensitivity knapsack", []).append(row)
    # Layers by measured sensitivity (KL at 2 bits minus KL at 4 bits), least first, as overrides.
    sens = r.job("sensitivity-3.0", precision={"policy": "sensitivity", "target_bpw": 3.0, "bit_options": [2, 4]})
    delta = {l["index"]: l["sensitivity"]["2"] - l["sensitivity"]["4"] for l in sens["layers"]}
    order = sorted(delta, key=lambda l: delta[l])
    curve = []
    for k in range(n + 1):
        overrides = {f"model.layers.{l}.*": {"bits": 2} for l in order[:k]}
        curve.append(r.job(f"order-sensitivity-{k}", quant={"bits": 4}, precision={"overrides": overrides}))
    curves["sensitivity order"] = curve
    return curves, order


def exp_methods(r):
    rows = [("original", r.original()),
            ("int8 (all linears)", r.job("int8", quant={"method": "int8", "bits": 8})),
            ("int8 attention only", r.job("int8-attn", quant={"method": "int8", "bits": 8}, precision={"components": ["attn"]})),
            ("int8 MLP only", r.job("int8-mlp", quant={"method": "int8", "bits": 8}, precision={"components": ["mlp"]})),
            ("GPTQ 8", r.job("uniform-8", quant={"bits": 8})),
            ("GPTQ 4", r.job("uniform-4", quant={"bits": 4})),
            ("RTN 4", r.job("rtn-4", quant={"method": "rtn", "bits": 4})),
            ("NF4", r.job("nf4", quant={"method": "nf4", "group_size": 64}))]
    return rows


# ---------------------------------------------------------------- SVG (hand-written)
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"]


def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def nice_ticks(lo, hi, n=5):
    if hi <= lo:
        hi = lo + 1
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= n:
            step *= m
            break
    start = math.floor(lo / step) * step
    ticks = []
    v = start
    while v <= hi + 1e-12:
        if v >= lo - 1e-12:
            ticks.append(round(v, 10))
        v += step
    return ticks


def line_plot(path, title, xlabel, ylabel, series, logx=False, points_only=False):
    """series: [(label, [(x, y, point_label or None)])]"""
    w, h, ml, mr, mt, mb = 760, 460, 70, 210, 40, 50
    xs = [p[0] for _, pts in series for p in pts]
    ys = [p[1] for _, pts in series for p in pts]
    fx = (lambda v: math.log10(v)) if logx else (lambda v: v)
    x0, x1 = min(fx(x) for x in xs), max(fx(x) for x in xs)
    y0, y1 = min(ys), max(ys)
    pad = (y1 - y0) * 0.05 or 0.1
    y0, y1 = y0 - pad, y1 + pad
    xpad = (x1 - x0) * 0.05 or 0.1
    x0, x1 = x0 - xpad, x1 + xpad
    X = lambda v: ml + (fx(v) - x0) / (x1 - x0) * (w - ml - mr)
    Y = lambda v: mt + (y1 - v) / (y1 - y0) * (h - mt - mb)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2}" y="22" text-anchor="middle" font-size="15">{esc(title)}</text>',
           f'<line x1="{ml}" y1="{h - mb}" x2="{w - mr}" y2="{h - mb}" stroke="black"/>',
           f'<line x1="{ml}" y1="{mt}" x2="{ml}" y2="{h - mb}" stroke="black"/>']
    for t in nice_ticks(y0, y1):
        out.append(f'<line x1="{ml}" y1="{Y(t):.1f}" x2="{w - mr}" y2="{Y(t):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{ml - 6}" y="{Y(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    if logx:
        xt = [10 ** e for e in range(math.floor(x0), math.ceil(x1) + 1) if x0 <= e <= x1]
        xt += [m * 10 ** e for e in range(math.floor(x0), math.ceil(x1) + 1) for m in (2, 5) if x0 <= math.log10(m * 10 ** e) <= x1]
    else:
        xt = nice_ticks(x0, x1)
    for t in xt:
        out.append(f'<text x="{X(t):.1f}" y="{h - mb + 16}" text-anchor="middle">{t:g}</text>')
    out.append(f'<text x="{(ml + w - mr) / 2}" y="{h - 12}" text-anchor="middle">{esc(xlabel)}</text>')
    out.append(f'<text x="16" y="{(mt + h - mb) / 2}" text-anchor="middle" transform="rotate(-90 16 {(mt + h - mb) / 2})">{esc(ylabel)}</text>')
    for i, (label, pts) in enumerate(series):
        c = PALETTE[i % len(PALETTE)]
        pts = sorted(pts, key=lambda p: p[0]) if not points_only else pts
        if not points_only and len(pts) > 1:
            d = " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y, _ in pts)
            out.append(f'<polyline points="{d}" fill="none" stroke="{c}" stroke-width="1.8"/>')
        for x, y, pl in pts:
            out.append(f'<circle cx="{X(x):.1f}" cy="{Y(y):.1f}" r="3.5" fill="{c}"/>')
            if pl:
                out.append(f'<text x="{X(x) + 6:.1f}" y="{Y(y) - 6:.1f}" font-size="10" fill="{c}">{esc(pl)}</text>')
        ly = mt + 16 * i
        out.append(f'<rect x="{w - mr + 12}" y="{ly}" width="12" height="12" fill="{c}"/>')
        out.append(f'<text x="{w - mr + 30}" y="{ly + 10}">{esc(label)}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def heat_strip(path, layers):
    """Rows LIM, ZD, sensitivity (KL at 2 bits); one cell per layer, colour scaled per row."""
    rows = [("LIM (higher = more important)", [l["lim"] for l in layers]),
            ("ZD (lower = more important)", [l["zd"] for l in layers]),
            ("sensitivity: KL at 2 bits", [l["sensitivity"].get("2", 0.0) for l in layers]),
            ("sensitivity: KL at 4 bits", [l["sensitivity"].get("4", 0.0) for l in layers])]
    cw, ch, ml, mt = 90, 44, 230, 40
    w, h = ml + cw * len(layers) + 20, mt + ch * len(rows) + 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2}" y="22" text-anchor="middle" font-size="15">Per-layer scores, stories260K (colour scaled per row)</text>']
    for r, (label, vals) in enumerate(rows):
        lo, hi = min(vals), max(vals)
        out.append(f'<text x="{ml - 8}" y="{mt + r * ch + ch / 2 + 4}" text-anchor="end">{esc(label)}</text>')
        for i, v in enumerate(vals):
            t = (v - lo) / (hi - lo) if hi > lo else 0.5
            col = f"rgb({int(255 - 40 * t)},{int(245 - 180 * t)},{int(235 - 215 * t)})"
            x, y = ml + i * cw, mt + r * ch
            out.append(f'<rect x="{x}" y="{y}" width="{cw - 2}" height="{ch - 2}" fill="{col}"/>')
            out.append(f'<text x="{x + cw / 2 - 1}" y="{y + ch / 2 + 4}" text-anchor="middle" font-size="10">{v:.4g}</text>')
    for i in range(len(layers)):
        out.append(f'<text x="{ml + i * cw + cw / 2}" y="{mt + len(rows) * ch + 16}" text-anchor="middle">layer {layers[i]["index"]}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


# ---------------------------------------------------------------- report
def fmt_row(label, row, extra=()):
    cells = [label, f"{row['avg_bits']:.3f}", f"{row.get('avg_bits_effective', row['avg_bits']):.3f}",
             f"{row['bytes'] / 1024:.1f}", f"{row['ppl']:.4f}", f"{row.get('kl', 0.0):.5f}", f"{row.get('top1', 1.0):.4f}"]
    return "| " + " | ".join(list(cells) + list(extra)) + " |"


HEAD = "| job | avg bits | avg bits (eff.) | KiB | ppl | KL | top-1 |"
SEP = "|---|---:|---:|---:|---:|---:|---:|"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shardq", required=True)
    ap.add_argument("--shared", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default=None)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--max-windows", type=int, default=120)
    ap.add_argument("--only", default="key,partial,order,methods")
    args = ap.parse_args()
    args.work = args.work or os.path.join(args.out, "work")
    os.makedirs(args.out, exist_ok=True)
    r = Runner(args)
    r.convert()
    only = set(args.only.split(","))
    md = ["# Mixed precision on stories260K", "",
          "Written by `bench/experiments/precision_experiments.py` (see its docstring for the grid); "
          "policies as defined in `coordinator/precision_policy.hpp`.", "",
          f"Calibration: `{CALIB}`, {args.samples} windows of {args.seq_len} tokens. Evaluation: `{EVAL}`, "
          f"first {args.max_windows} windows of 256 tokens, KL and top-1 against the original model. "
          "GPTQ/RTN group size 32, asymmetric, act-order. Bit options {2, 4} unless noted.", ""]
    original = r.original()
    md += [f"Original (fp32 safetensors): ppl {original['ppl']:.4f}.", ""]

    if "key" in only:
        rows = exp_key(r)
        md += ["## Sensitivity against the other policies at 3.0 and 3.5 average bits", "", HEAD, SEP]
        for target, label, row in rows:
            md.append(fmt_row(f"{label} @ {target}" if target else label, row))
        md.append("")
        series = {}
        for target, label, row in rows:
            if target is None or "uniform" in label:
                continue
            series.setdefault(label.split(" seed")[0], []).append((row["avg_bits"], row["ppl"], None))
        series["uniform"] = [(r.results[n]["avg_bits"], r.results[n]["ppl"], None) for n in ("uniform-3", "uniform-4")]
        line_plot(os.path.join(args.out, "ppl_vs_bits_policies.svg"), "Perplexity vs average bits by policy",
                  "average bits per weight", "perplexity", sorted(series.items()))
        md += ["![ppl vs bits](ppl_vs_bits_policies.svg)", ""]
        sens = r.results["sensitivity-3.0"]
        heat_strip(os.path.join(args.out, "layer_scores.svg"), sens["layers"])
        md += ["### Per-layer scores", "", "| layer | LIM | ZD | KL at 2 bits | KL at 4 bits |", "|---:|---:|---:|---:|---:|"]
        for l in sens["layers"]:
            md.append(f"| {l['index']} | {l['lim']:.4f} | {l['zd']:.4f} | {l['sensitivity']['2']:.5f} | {l['sensitivity']['4']:.5f} |")
        md += ["", "![layer scores](layer_scores.svg)", ""]
        md += ["Bits chosen per layer (q, k, v, o, gate, up, down) at 3.0:", ""]
        for name in ("sensitivity-3.0", "lim-3.0", "zd-3.0", "random0-3.0"):
            md.append(f"- {name}: " + "; ".join(f"L{i} {''.join(map(str, b))}" for i, b in enumerate(r.results[name]['layer_bits'])))
        md.append("")

    if "partial" in only:
        md += ["## Experiment 1: partial quantization (Kim & Lim)", "", HEAD, SEP]
        for label, row in exp_partial(r):
            md.append(fmt_row(label, row))
        md.append("")

    if "order" in only:
        curves, order = exp_order(r)
        md += ["## Experiment 2: layers moved one by one from 4 to 2 bits", "",
               f"Sensitivity order (least first, by KL(2) − KL(4)): {order}.", "",
               "| order | " + " | ".join(f"{k} moved" for k in range(len(next(iter(curves.values()))))) + " |",
               "|---|" + "---:|" * len(next(iter(curves.values())))]
        for label, rows in curves.items():
            md.append(f"| {label} | " + " | ".join(f"{row['ppl']:.4f}" for row in rows) + " |")
        md.append("")
        line_plot(os.path.join(args.out, "ppl_vs_bits_order.svg"), "Layers moved 4 → 2 bits: perplexity vs average bits",
                  "average bits per weight", "perplexity",
                  [(label, [(row["avg_bits"], row["ppl"], None) for row in rows]) for label, rows in curves.items()])
        md += ["![order](ppl_vs_bits_order.svg)", ""]

    if "methods" in only:
        rows = exp_methods(r)
        md += ["## Experiment 3: methods", "", HEAD + " load s | tokens/s |", SEP + "---:|---:|"]
        for label, row in rows:
            md.append(fmt_row(label, row, (f"{row['load_s']:.3f}", f"{row['tokens_per_s']:.0f}")))
        md.append("")
        pts = []
        for label, row in rows:
            pts.append((label, [(row["bytes"] / 1024, row["ppl"], None)]))
        if "partial" in only:
            for label, row in exp_partial(r)[1:4]:
                pts.append((label, [(row["bytes"] / 1024, row["ppl"], None)]))
        line_plot(os.path.join(args.out, "size_vs_ppl.svg"), "Checkpoint size vs perplexity", "size (KiB, log)",
                  "perplexity", pts, logx=True, points_only=True)
        md += ["![size vs ppl](size_vs_ppl.svg)", ""]

    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(r.results, f, indent=1)
    print(f"report: {os.path.join(args.out, 'report.md')}")


if __name__ == "__main__":
    sys.exit(main())
