#!/usr/bin/env python3
"""Print what a steepest optimizer-state file (checkpoint) holds, and check it.

    python3 scripts/read_checkpoint.py opt.safetensors            # summary per layer and buffer
    python3 scripts/read_checkpoint.py opt.safetensors --values 4 # and the first 4 values of each

Reads version 2 (the safetensors layout that st::save writes) and version 1 (the earlier private
layout) with the standard library only; numpy, when installed, is used for the statistics.
Checks what the C++ loader checks about the file itself: the header, that the tensors tile the
bytes after it exactly, the CRC-32 (zlib's), and every value's domain (the "domains" each layer
records: moments finite, second moments finite and >= 0). It cannot check the identity against a model: that needs the
optimizer, which only st::load has. Exit status 0 when the file is sound, 1 otherwise.

As a module: `read(path)` returns (metadata dict, {tensor name: (shape, list or numpy array)}).
"""
import argparse
import json
import math
import re
import struct
import sys
import zlib

DTYPES = {"F32": ("f", 4), "F64": ("d", 8), "BF16": ("H", 2)}


class CheckpointError(Exception):
    pass


def _values(raw, dtype, shape):
    if dtype not in DTYPES:
        raise CheckpointError("unknown dtype %r" % dtype)
    code, size = DTYPES[dtype]
    try:
        import numpy as np

        if dtype == "BF16":  # bf16 is the high half of a float32: widen by a 16-bit shift (exact)
            return (np.frombuffer(raw, dtype="<u2").astype("<u4") << 16).view("<f4").reshape(shape)
        return np.frombuffer(raw, dtype="<f%d" % size).reshape(shape)
    except ImportError:
        words = struct.unpack("<%d%s" % (len(raw) // size, code), raw)
        if dtype == "BF16":
            return [struct.unpack("<f", struct.pack("<I", w << 16))[0] for w in words]
        return list(words)


def _read_v2(data):
    (n,) = struct.unpack_from("<Q", data, 0)
    if n < 2 or 8 + n > len(data):
        raise CheckpointError("header length %d does not fit a file of %d bytes" % (n, len(data)))
    header_bytes = data[8 : 8 + n]
    try:
        header = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError("header is not JSON: %s" % e)
    meta = header.pop("__metadata__", {})
    if meta.get("format") != "steepest.optimizer-state":
        raise CheckpointError("not a steepest optimizer-state file (format %r)" % meta.get("format"))
    payload = data[8 + n :]
    spans = sorted((t["data_offsets"][0], t["data_offsets"][1], name) for name, t in header.items())
    at = 0
    for begin, end, name in spans:
        if begin != at:
            raise CheckpointError("tensor %r: overlaps or leaves a gap at byte %d" % (name, at))
        at = end
    if at != len(payload):
        raise CheckpointError("tensor bytes end at %d, the file has %d after its header" % (at, len(payload)))
    if "crc32" in meta:
        # The CRC covers the whole file with its own eight digits written as '0' (found at any
        # JSON spacing, in either case, as the C++ loader finds them).
        found = re.search(rb'"crc32"\s*:\s*"([0-9A-Fa-f]{8})"', header_bytes)
        if found is None or found.group(1).decode() != meta["crc32"]:
            raise CheckpointError("malformed crc32 field (8 hex digits expected)")
        zeroed = data[:8] + header_bytes[:found.start(1)] + b"00000000" + header_bytes[found.end(1):] + payload
        if zlib.crc32(zeroed) != int(meta["crc32"], 16):
            raise CheckpointError("CRC-32 mismatch (truncated or corrupt; a tool that rewrote the file "
                                  "with the metadata copied must drop the crc32 field)")
    tensors = {}
    for name, t in header.items():
        begin, end = t["data_offsets"]
        tensors[name] = (tuple(t["shape"]), _values(payload[begin:end], t["dtype"], tuple(t["shape"])))
    return meta, tensors


def _read_v1(data):
    pos = 8

    def get(fmt):
        nonlocal pos
        v = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return v[0]

    def get_str():
        nonlocal pos
        n = get("Q")
        s = data[pos : pos + n].decode("utf-8", "replace")
        pos += n
        return s

    try:
        version, scalar = get("I"), get("I")
        if version != 1 or scalar not in (4, 8):
            raise CheckpointError("version %d, scalar size %d: not a version-1 file" % (version, scalar))
        dtype = "F32" if scalar == 4 else "F64"
        meta = {"format": "steepest.optimizer-state", "format_version": "1", "dtype": dtype}
        meta["optimizer"] = get_str()
        meta["step"] = str(get("q"))
        layers, tensors = [], {}
        for _ in range(get("Q")):
            name = get_str()
            rows, cols = get("q"), get("q")
            keys = []
            for k in range(get("Q")):
                br, bc = get("q"), get("q")
                raw = data[pos : pos + br * bc * scalar]
                if len(raw) != br * bc * scalar:
                    raise CheckpointError("truncated")
                pos += len(raw)
                key = "%d" % k
                tensors["%s/%s" % (name, key)] = ((br, bc), _values(raw, dtype, (br, bc)))
                keys.append(key)
            layers.append({"name": name, "shape": [rows, cols], "buffers": keys})
        meta["layers"] = json.dumps(layers)
        (stored,) = struct.unpack_from("<Q", data, pos)
    except struct.error:
        raise CheckpointError("truncated")
    h = 1469598103934665603
    for b in data[:pos]:  # FNV-1a, 64-bit
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    if h != stored or pos + 8 != len(data):
        raise CheckpointError("checksum mismatch or trailing bytes")
    return meta, tensors


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise CheckpointError("%d bytes: not a steepest state file" % len(data))
    return _read_v1(data) if data[:8] == b"STEEPEST" else _read_v2(data)


def _stats(values):
    flat = values.ravel().tolist() if hasattr(values, "ravel") else list(values)
    finite = [x for x in flat if math.isfinite(x)]
    bad = len(flat) - len(finite)
    if not finite:
        return "empty" if not flat else "%d non-finite" % bad
    rms = math.sqrt(sum(x * x for x in finite) / len(finite))
    s = "min %.4g  max %.4g  rms %.4g" % (min(finite), max(finite), rms)
    return s + ("  NON-FINITE: %d" % bad if bad else "")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("path")
    ap.add_argument("--values", type=int, default=0, help="print the first N values of each buffer")
    args = ap.parse_args()
    try:
        meta, tensors = read(args.path)
    except (CheckpointError, OSError) as e:
        print("%s: %s" % (args.path, e))
        return 1
    print("%s: steepest optimizer state, format version %s, %s, step %s" % (
        args.path, meta.get("format_version"), meta.get("dtype"), meta.get("step")))
    print("optimizer: %s" % meta.get("optimizer"))
    for r in json.loads(meta.get("routes", "[]")):
        hp = ", ".join("%s=%s" % kv for kv in r["hyper"].items())
        print("  route %s: %s  (%s)" % (r["selector"], r["chain"], hp))
    print("crc32: %s" % meta.get("crc32", "(none)"))
    sound = True
    if not 0 <= int(meta.get("step", "0")) <= 2**53:
        print("  STEP OUT OF RANGE")
        sound = False
    for layer in json.loads(meta.get("layers", "[]")):
        desc = "x".join(str(d) for d in layer["shape"])
        extra = "  ".join(str(layer[k]) for k in ("role", "geometry", "chain") if k in layer)
        print("%s  %s  %s" % (layer["name"], desc, extra))
        domains = layer.get("domains", ["finite"] * len(layer["buffers"]))  # version 1: all finite
        for key, domain in zip(layer["buffers"], domains):
            shape, values = tensors["%s/%s" % (layer["name"], key)]
            flat = values.ravel().tolist() if hasattr(values, "ravel") else list(values)
            if domain != "any" and any(not math.isfinite(x) or (domain == "non-negative" and x < 0) for x in flat):
                sound = False
            line = "    %-16s %s" % (key, _stats(values))
            if args.values:
                line += "  [" + ", ".join("%.6g" % x for x in flat[: args.values]) + "]"
            print(line)
    if not sound:
        print("values outside their domain: st::load refuses this file")
    return 0 if sound else 1


if __name__ == "__main__":
    sys.exit(main())
