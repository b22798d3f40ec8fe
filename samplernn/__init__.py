"""SampleRNN: unconditional raw-audio generation (Mehri et al., ICLR 2017, arXiv 1612.07837).

The names below are imported on first use, so that a command's --help and its shell
completion, which import only the command's configs, never wait for torch.
"""

import importlib

from .version import __version__

_WHERE = {"SampleRNN": ".model", "SampleRNNConfig": ".modelconfig", "quantize": ".quantization",
          "dequantize": ".quantization", "nll_bits": ".quantization", "silence_code": ".quantization",
          "generate": ".sampler", "load_checkpoint": ".checkpoint"}
__all__ = [*_WHERE, "__version__"]


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'samplernn' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name], __name__), name)
    globals()[name] = value
    return value
