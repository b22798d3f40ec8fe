"""Does a conditioned model know its labels? By likelihood (each file scored under every
label) and by a classifier of the real audio asked about generated samples.

    python scripts/label_check.py <run dir>/checkpoints/best.pt [--per-label 10] [--seconds 4]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled
from samplernn.cli import label_check as main  # noqa: E402  (the same as samplernn-label-check)

if __name__ == "__main__":
    main()
