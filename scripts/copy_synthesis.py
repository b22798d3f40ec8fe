"""How close does a vocoder bring real files back from their features? The log-mel distance
of its resynthesis, an unconditioned sample's and the re-quantized original's.

    python scripts/copy_synthesis.py <run dir>/checkpoints/best.pt [--baseline <other>/best.pt]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled
from samplernn.cli import copy_synthesis as main  # noqa: E402  (samplernn-copy-synthesis)

if __name__ == "__main__":
    main()
