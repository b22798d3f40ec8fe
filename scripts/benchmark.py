"""Training and generation speed: python scripts/benchmark.py model=three_tier model.dim=256"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled
from samplernn.cli import benchmark as main  # noqa: E402  (the same app as samplernn-benchmark)
# (bash completion of `python <this file>` looks for @hydra.main here: it is in samplernn/cli.py)

if __name__ == "__main__":
    main()
