"""Build the tier-comparison W&B report for a group of synced runs (needs the network).

    python scripts/wandb_report.py --entity me --project samplernn --group <the runs' group>
"""

from samplernn.wandb_report import main

if __name__ == "__main__":
    main()
