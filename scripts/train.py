"""Train SampleRNN: python scripts/train.py [model=three_tier] [dataset=...] [key=value ...]"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled
from samplernn.cli import train as main  # noqa: E402  (the same app as samplernn-train)
# (bash completion of `python <this file>` looks for @hydra.main here: it is in samplernn/cli.py)

if __name__ == "__main__":
    main()
