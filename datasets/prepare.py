"""Prepare a folder of audio for training: python datasets/prepare.py source=<folder> name=<name>

Writes data/<name>/ (samples.npy, manifest.json, report.json); options in configs/prepare.yaml.
"""

import sys
from pathlib import Path

import hydra

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled
from samplernn.prepare import run  # noqa: E402


@hydra.main(config_path="../configs", config_name="prepare", version_base="1.3")
def main(cfg) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
