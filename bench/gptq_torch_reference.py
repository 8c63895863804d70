#!/usr/bin/env python3
"""Straightforward PyTorch GPTQ (Frantar et al. 2022, Algorithm 1, as IST-DASLab/gptq
gptq.py fasterquant with quant.py's Quantizer: act-order, group-wise asymmetric grids taken
when a group's first column is reached, damping 0.01 · mean(diag H), lazy-batch blocks of 128),
written out here so the figures of bench_gpu_gptq have a baseline measured on the same GPU.

Prints one JSON object: per shape the median and min seconds of the factorisation + all rows
(what bench_gpu_gptq reports as factor_s + rows_s), the device, torch version, and the same
cuBLAS sgemm 4096³ peak. torch exists only on the GPU machine:
    python3 bench/gptq_torch_reference.py [--repeats 3] [--shapes 4096x4096,11008x4096,28672x8192]
"""
import argparse
import json
import time

import torch


def find_params(w, bits):
    """Quantizer.find_params (asym, per row) on w [rows, group]: scale, zero [rows, 1]."""
    maxq = 2**bits - 1
    xmin = torch.clamp(w.min(dim=1).values, max=0)
    xmax = torch.clamp(w.max(dim=1).values, min=0)
    both_zero = (xmin == 0) & (xmax == 0)
    xmin[both_zero] = -1
    xmax[both_zero] = 1
    scale = (xmax - xmin) / maxq
    zero = torch.round(-xmin / scale)
    return scale.unsqueeze(1), zero.unsqueeze(1)


def quantize(x, scale, zero, maxq):
    q = torch.clamp(torch.round(x / scale) + zero, 0, maxq)
    return scale * (q - zero), q


def gptq(W, H, bits=4, groupsize=128, blocksize=128, percdamp=0.01, actorder=True):
    W = W.clone().float()
    H = H.clone()
    rows, cols = W.shape
    maxq = 2**bits - 1
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    if actorder:
        perm = torch.argsort(torch.diag(H), descending=True)
        W = W[:, perm]
        H = H[perm][:, perm]
        invperm = torch.argsort(perm)
    Q = torch.zeros_like(W)
    damp = percdamp * torch.mean(torch.diag(H))
    H[range(cols), range(cols)] += damp
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    Hinv = torch.linalg.cholesky(H, upper=True)
    scale = zero = None
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]
            if (i1 + i) % groupsize == 0:
                scale, zero = find_params(W[:, i1 + i:i1 + i + groupsize], bits)
            q, _ = quantize(w.unsqueeze(1), scale, zero, maxq)
            q = q.flatten()
            Q1[:, i] = q
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        Q[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    if actorder:
        Q = Q[:, invperm]
    return Q


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shapes", default="4096x4096,11008x4096,4096x14336,28672x8192")
    parser.add_argument("--tokens", type=int, default=2048)
    args = parser.parse_args()
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    result = {"bench": "gptq_torch_reference", "device": torch.cuda.get_device_name(0), "torch": torch.__version__}

    a = torch.randn(4096, 4096, device=dev)
    b = torch.randn(4096, 4096, device=dev)
    torch.matmul(a, b)
    torch.cuda.synchronize()
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    result["sgemm_4096_min_s"] = min(times)
    result["sgemm_tflops"] = 2 * 4096**3 / min(times) / 1e12

    gen = torch.Generator(device=dev).manual_seed(0)
    for shape in args.shapes.split(","):
        rows, cols = (int(v) for v in shape.split("x"))
        x = torch.randn(args.tokens, cols, device=dev, generator=gen)
        H = 2.0 / args.tokens * (x.t() @ x)
        W = 0.02 * torch.randn(rows, cols, device=dev, generator=gen)
        gptq(W[:128], H)  # warm-up (kernels, allocator)
        torch.cuda.synchronize()
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            Q = gptq(W, H)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        # tr(D H Dᵀ) as Σ (D H) ∘ D: no rows × rows product (35 TFLOP at 28672 rows).
        err = (((W - Q) @ H) * (W - Q)).sum() / ((W @ H) * W).sum()
        times.sort()
        result[f"gptq_{rows}x{cols}_median_s"] = times[len(times) // 2]
        result[f"gptq_{rows}x{cols}_min_s"] = times[0]
        result[f"gptq_{rows}x{cols}_rel_error"] = float(err)
        del x, H, W, Q
        torch.cuda.empty_cache()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
