"""WAV files from a checkpoint: python scripts/generate.py checkpoint=<path> [seconds=10 ...]"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled
from samplernn.cli import generate as main  # noqa: E402  (the same app as samplernn-generate)
# (bash completion of `python <this file>` looks for @hydra.main here: it is in samplernn/cli.py)

if __name__ == "__main__":
    main()
