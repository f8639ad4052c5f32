"""``cris-prepare``: convert RefCOCO / RefCOCO+ / G-Ref from the refer format to CRIS.pytorch's
LMDB format, one ``<output-dir>/<split>.lmdb`` per split.

    cris-prepare --data-root datasets --dataset refcoco --output-dir datasets/lmdb/refcoco
    cris-prepare --data-root datasets --dataset refcocog --split-by google --output-dir datasets/lmdb/refcocog_g
"""

from __future__ import annotations

import argparse
import sys

from ..paths import check_writable
from .common import UsageError, run_command
from ..extras import missing_extra

#: Splits converted by default, per (dataset, split_by).
DEFAULT_SPLITS = {("refcoco", "unc"): ("train", "val", "testA", "testB"),
                  ("refcoco+", "unc"): ("train", "val", "testA", "testB"),
                  ("refcocog", "umd"): ("train", "val", "test"),
                  ("refcocog", "google"): ("train", "val")}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cris-prepare", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--data-root", required=True,
                        help="holds <dataset>/refs(...).p, <dataset>/instances.json and images/train2014/")
    parser.add_argument("--dataset", required=True,
                        choices=("refcoco", "refcoco+", "refcocog", "refcocog_u", "refcocog_g"))
    parser.add_argument("--split-by", choices=("unc", "umd", "google"), help="default: unc, or umd for refcocog")
    parser.add_argument("--splits", nargs="+", help="default: every split of the dataset")
    parser.add_argument("--output-dir", required=True, help="where <split>.lmdb files are written")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command("cris-prepare", build_parser(), _main, argv)


def _main(args) -> int:
    missing = missing_extra("train", "writing LMDB files", ("lmdb",))
    if missing:
        raise UsageError(missing)
    check_writable(args.output_dir, "--output-dir", kind="directory")
    from ..data.convert import refer_to_lmdb
    from ..data.refer import resolve_dataset

    dataset, split_by = resolve_dataset(args.dataset, args.split_by)
    for split in args.splits or DEFAULT_SPLITS[(dataset, split_by)]:
        path = refer_to_lmdb(args.data_root, dataset, split, args.output_dir, split_by)
        print(f"cris-prepare: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
