#!/usr/bin/env python3
"""Load a safetensors file with the reference `safetensors` package and print what it sees as JSON.

Used by LockstepCheckpointTests to prove Lockstep's files are readable by the standard tooling.
Output: {"metadata": {...}, "tensors": {name: {"dtype", "shape", "sum", "bits"}}}; "bits" holds each
element's little-endian bit pattern in hex, so callers can compare bit-exactly.
Exit status 3 means the safetensors or numpy package is missing (the test then installs or skips).
"""
import json
import sys

try:
    import numpy as np
    from safetensors import safe_open
    from safetensors.numpy import load_file
except ImportError as error:  # Distinguish "not installed" from "could not read the file".
    print(f"missing package: {error}", file=sys.stderr)
    sys.exit(3)


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: read_safetensors.py FILE", file=sys.stderr)
        return 2
    path = sys.argv[1]
    tensors = load_file(path)
    with safe_open(path, framework="np") as handle:
        metadata = handle.metadata() or {}
    report = {"metadata": metadata, "tensors": {}}
    for name, array in tensors.items():
        report["tensors"][name] = {
            "dtype": str(array.dtype),
            "shape": list(array.shape),
            "sum": float(np.sum(array, dtype=np.float64)),
            # Bit patterns as hex: exact, unlike decimal floats through a JSON parser.
            "bits": [format(int(word), "x") for word in array.reshape(-1).view(f"u{array.dtype.itemsize}")],
        }
    json.dump(report, sys.stdout, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
