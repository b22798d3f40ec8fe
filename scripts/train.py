"""Train SampleRNN: python scripts/train.py [model=three_tier] [dataset=...] [key=value ...]"""

import hydra
from omegaconf import DictConfig

import samplernn.train
from samplernn.errors import one_line_errors


@hydra.main(config_path="../configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    with one_line_errors():  # a user error is one line (exit 2), never a traceback
        final = samplernn.train.run(cfg)
    return final.get("test/nll_bits", final.get("valid/nll_bits"))


if __name__ == "__main__":
    main()
