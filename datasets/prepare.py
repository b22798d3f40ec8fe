"""Prepare a folder of audio for training: python datasets/prepare.py source=<folder> name=<name>

Writes data/<name>/ (samples.npy, manifest.json, report.json); options in configs/prepare.yaml.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled
from samplernn.cli import prepare as main  # noqa: E402  (the same app as samplernn-prepare)
# (bash completion of `python <this file>` looks for @hydra.main here: it is in samplernn/cli.py)

if __name__ == "__main__":
    main()
