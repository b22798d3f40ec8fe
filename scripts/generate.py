"""WAV files from a checkpoint: python scripts/generate.py checkpoint=<path> [seconds=10 ...]"""

import hydra
from omegaconf import DictConfig

import samplernn.generation


@hydra.main(config_path="../configs", config_name="generate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    samplernn.generation.run(cfg)


if __name__ == "__main__":
    main()
