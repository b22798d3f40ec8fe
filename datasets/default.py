"""Build the built-in default dataset (synthetic plucked-string music) into data/default.

    python datasets/default.py [--out-dir data/default] [--overwrite]

A no-op when it is already there. Needs no download and no audio of your own.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled
from samplernn.synth import build_default_dataset  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default="data/default", help="where to write it")
    parser.add_argument("--overwrite", action="store_true", help="rebuild even if present")
    args = parser.parse_args()
    path = build_default_dataset(args.out_dir, overwrite=args.overwrite)
    print(f"default dataset: {path.resolve()}")


if __name__ == "__main__":
    main()
