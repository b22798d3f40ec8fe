"""SampleRNN: unconditional raw-audio generation (Mehri et al., ICLR 2017, arXiv 1612.07837)."""

from .checkpoint import load_checkpoint
from .model import SampleRNN, SampleRNNConfig
from .quantize import dequantize, nll_bits, quantize, silence_code
from .sampler import generate

__all__ = ["SampleRNN", "SampleRNNConfig", "quantize", "dequantize", "nll_bits", "silence_code",
           "generate", "load_checkpoint"]
__version__ = "0.1.0"
