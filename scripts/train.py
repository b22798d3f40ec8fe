"""Train SampleRNN: python scripts/train.py [model=three_tier] [dataset=...] [key=value ...]"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled
from samplernn.cli import train as main  # noqa: E402  (the same app as samplernn-train)

if __name__ == "__main__":
    main()
