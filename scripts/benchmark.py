"""Training and generation speed: python scripts/benchmark.py model=three_tier model.dim=256"""

import hydra
from omegaconf import DictConfig

import samplernn.benchmark
from samplernn.errors import one_line_errors


@hydra.main(config_path="../configs", config_name="benchmark", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with one_line_errors():  # a user error is one line (exit 2), never a traceback
        samplernn.benchmark.run(cfg)


if __name__ == "__main__":
    main()
