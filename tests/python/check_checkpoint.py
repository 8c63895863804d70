#!/usr/bin/python3
"""An independent reader of the shardq checkpoint (h5py + numpy only).

Generates the fixture with the C++ test CheckpointFixture.WriteForPythonReader, then:
  reader  opens model.h5, checks that every root entry is a relative external link into a
          shard, follows it, checks dtypes/attributes, dequantizes every quantized linear from
          qweight/scales/zeros/g_idx/outliers alone using the layout documented in
          kernels/quant_types.hpp, and compares bit for bit with the matrix the C++ side
          dequantized; recomputes the manifest's bit averages (common/manifest.hpp).
  h5ls    `h5ls -r --follow-symlinks model.h5` lists every tensor and every dataset inside
          the quantized groups (plain `h5ls -r` shows the external links without following).
Usage: check_checkpoint.py {reader|h5ls} UNIT_TEST_BINARY
"""
import json
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np

# kernels/quant_types.hpp nf4_levels (bitsandbytes' float32 NF4 table).
NF4_LEVELS = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=np.float32)


def make_fixture(unit_tests, directory):
    env = dict(os.environ, SHARDQ_FIXTURE_DIR=directory)
    r = subprocess.run([unit_tests, "--gtest_filter=CheckpointFixture.WriteForPythonReader"],
                       env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("fixture generation failed:\n" + r.stdout + r.stderr)


def unpack_codes(qweight, cols, bits):
    """Each row of qweight is a little-endian bit stream; code c is bits [c*bits, (c+1)*bits)."""
    rows = qweight.shape[0]
    stream = np.unpackbits(qweight.astype("<u4").view(np.uint8).reshape(rows, -1), axis=1, bitorder="little")
    assert not stream[:, cols * bits:].any(), "unused high bits of a row must be zero"
    per_code = stream[:, :cols * bits].reshape(rows, cols, bits).astype(np.uint32)
    return (per_code << np.arange(bits, dtype=np.uint32)).sum(axis=2)


def dequantize(group):
    bits = int(group.attrs["bits"])
    group_size = int(group.attrs["group_size"])
    method = group.attrs["method"]
    rows, cols = (int(x) for x in group.attrs["shape"])
    qweight = group["qweight"][()]
    scales = group["scales"][()]
    assert qweight.dtype == np.uint32 and qweight.shape == (rows, (cols * bits + 31) // 32)
    assert scales.dtype == np.float16, scales.dtype
    codes = unpack_codes(qweight, cols, bits)
    group_cols = cols if group_size <= 0 else group_size
    if "g_idx" in group:
        g = group["g_idx"][()]
        assert g.dtype == np.int32 and g.shape == (cols,)
    else:
        g = np.arange(cols) // group_cols
    scale = scales.astype(np.float32)[:, g]
    if method == "nf4":
        assert "zeros" not in group
        w = scale * NF4_LEVELS[codes]
    else:
        zeros = group["zeros"][()]
        assert zeros.dtype == np.uint8 and zeros.shape == scales.shape
        w = scale * (codes.astype(np.float32) - zeros.astype(np.float32)[:, g])
    if "outlier_cols" in group:
        w[:, group["outlier_cols"][()]] = group["outlier_weights"][()].astype(np.float32)
    return w.astype(np.float32)


def check_reader(directory):
    master = os.path.join(directory, "model.h5")
    manifest = json.load(open(os.path.join(directory, "manifest.json")))
    n_quantized = 0
    with h5py.File(master, "r") as f:
        assert json.loads(f.attrs["manifest"]) == manifest, "model.h5 manifest copy differs"
        shard_files = {s["file"] for s in manifest["shards"]}
        names = list(f.keys())
        assert names, "model.h5 is empty"
        for name in names:
            link = f.get(name, getlink=True)
            assert isinstance(link, h5py.ExternalLink), f"{name}: {link!r} is not an external link"
            assert link.filename in shard_files and "/" not in link.filename, link.filename
            assert link.path == "/" + name, link.path
            obj = f[name]
            if isinstance(obj, h5py.Group):
                got = dequantize(obj)
                expected = np.fromfile(os.path.join(directory, "expected", name + ".f32"), dtype="<f4")
                expected = expected.reshape(got.shape)
                if not np.array_equal(got.view(np.uint32), expected.view(np.uint32)):
                    bad = np.argwhere(got != expected)
                    sys.exit(f"{name}: {len(bad)} values differ, first at {bad[0]}: "
                             f"python {got[tuple(bad[0])]!r}, C++ {expected[tuple(bad[0])]!r}")
                n_quantized += 1
            else:
                assert obj.dtype in (np.float16, np.float32), f"{name}: {obj.dtype}"
    modules = manifest["modules"]
    assert n_quantized == sum(1 for m in modules if m["bits"] < 16) == 8, n_quantized

    # Bit averages, as documented in common/manifest.hpp.
    params = code_bits = overhead = 0
    for m in modules:
        rows, cols = m["shape"]
        p = rows * cols
        params += p
        code_bits += p * min(m["bits"], 16)
        if m["bits"] < 16:
            group = cols if m["group_size"] <= 0 else m["group_size"]
            n_groups = -(-cols // group)
            overhead += 16 * rows * n_groups + (m["bits"] * rows * n_groups if m["zeros"] else 0)
            overhead += 32 * cols if m["act_order"] else 0
            overhead += (16 * rows + 32) * m["outliers"]
    summary = manifest["summary"]
    assert summary["avg_bits"] == code_bits / params, (summary["avg_bits"], code_bits / params)
    assert summary["avg_bits_effective"] == (code_bits + overhead) / params
    print(f"ok: {len(names)} tensors via external links, {n_quantized} quantized linears "
          f"dequantized bit-exactly, avg_bits {summary['avg_bits']:.4f}")


def check_h5ls(directory):
    master = os.path.join(directory, "model.h5")
    out = subprocess.run(["h5ls", "-r", "--follow-symlinks", master], capture_output=True, text=True, check=True).stdout
    listed = {line.split()[0] for line in out.splitlines() if line.strip()}
    expected = set()
    with h5py.File(master, "r") as f:
        for name in f:
            expected.add("/" + name)
            if isinstance(f[name], h5py.Group):
                expected.update(f"/{name}/{child}" for child in f[name])
    missing = expected - listed
    assert not missing, f"h5ls -r --follow-symlinks does not list {sorted(missing)}:\n{out}"
    print(f"ok: h5ls lists all {len(expected)} objects")


def main():
    mode, unit_tests = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory(prefix="shardq-py-") as directory:
        make_fixture(unit_tests, directory)
        {"reader": check_reader, "h5ls": check_h5ls}[mode](directory)


if __name__ == "__main__":
    main()
