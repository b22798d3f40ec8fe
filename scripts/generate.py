"""WAV files from a checkpoint: python scripts/generate.py checkpoint=<path> [seconds=10 ...]"""

import hydra
from omegaconf import DictConfig

import samplernn.generation
from samplernn.errors import one_line_errors


@hydra.main(config_path="../configs", config_name="generate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with one_line_errors():  # a user error is one line (exit 2), never a traceback
        samplernn.generation.run(cfg)


if __name__ == "__main__":
    main()
