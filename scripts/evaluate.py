"""Exact NLL of a checkpoint: python scripts/evaluate.py checkpoint=<path> [split=test]"""

import hydra
from omegaconf import DictConfig

import samplernn.evaluate


@hydra.main(config_path="../configs", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    samplernn.evaluate.run(cfg)


if __name__ == "__main__":
    main()
