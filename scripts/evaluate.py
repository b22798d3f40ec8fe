"""Exact NLL of a checkpoint: python scripts/evaluate.py checkpoint=<path> [split=test]"""

import hydra
from omegaconf import DictConfig

import samplernn.evaluate
from samplernn.errors import one_line_errors


@hydra.main(config_path="../configs", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with one_line_errors():  # a user error is one line (exit 2), never a traceback
        samplernn.evaluate.run(cfg)


if __name__ == "__main__":
    main()
