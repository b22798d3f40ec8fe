"""Prepare a folder of audio for training: python datasets/prepare.py source=<folder> name=<name>

Writes data/<name>/ (samples.npy, manifest.json, report.json); options in configs/prepare.yaml.
"""

import sys
from pathlib import Path

import hydra

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled
from samplernn.errors import one_line_errors  # noqa: E402
from samplernn.prepare import run  # noqa: E402


@hydra.main(config_path="../configs", config_name="prepare", version_base="1.3")
def main(cfg) -> None:
    with one_line_errors():  # a user error is one line (exit 2), never a traceback
        run(cfg)


if __name__ == "__main__":
    main()
