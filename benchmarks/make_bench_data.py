"""Write the preprocessed benchmark brain that ``bench_inference.py`` reads on machines without ``../shared``.

How the file is made (run from the repository root, with ``../shared`` present)::

    python benchmarks/make_bench_data.py [--subject sub-0002] [--out benchmarks/data/sub-0002_preproc.npz]

The brain is loaded exactly as ``bench_inference.py`` loads it from test_BIDS (reoriented to
LPS, network order, histogram matched to ``Template-Month24-T1w``, zero outside the non-zero
voxels), cropped to the bounding box of its mask and stored compressed: ``volume`` (float16,
the crop), ``mask`` (the crop's mask, ``np.packbits``), ``shape`` (the full volume's shape)
and ``offset`` (the crop's corner in it), ``subject`` and ``template``. Float16 keeps about
three significant digits (steps of 0.5 near the template's top value of 1000).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_inference import BENCH_DATA, load_bids

from bmex_wf.models.tiling import bounding_box

LOGGER = logging.getLogger("make_bench_data")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subject", default="sub-0002")
    parser.add_argument("--template", default="Template-Month24-T1w")
    parser.add_argument("--out", type=Path, default=BENCH_DATA)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    vol, mask = load_bids(args.subject, args.template)
    box = bounding_box(mask)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, volume=vol[box].astype(np.float16), mask=np.packbits(mask[box]),
                        shape=np.asarray(vol.shape), offset=np.asarray([s.start for s in box]),
                        subject=args.subject, template=args.template)
    LOGGER.info("%s: crop %s of %s, %.1f MB", args.out, tuple(s.stop - s.start for s in box), vol.shape,
                args.out.stat().st_size / 1e6)
    return 0


if __name__ == "__main__":
    sys.exit(main())
