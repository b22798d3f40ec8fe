"""Compare runs from their run directories: Markdown tables on stdout, an HTML report on disk.

    python scripts/compare.py multirun/2024-05-01/12-00-00 [more run or multirun dirs] out=report.html

Reads only the run directories (config.yaml, summary.json, metrics.jsonl, samples/); works without W&B.
"""

from samplernn.report import main

if __name__ == "__main__":
    main()
