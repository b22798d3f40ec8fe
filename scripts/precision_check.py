"""What storing a model's weights in bf16 or int8 does to its most likely codes, measured.

    python scripts/precision_check.py <run dir>/checkpoints/best.pt [--seconds 1] [--streams 4]

Two sets of positions, per precision (JSON lines):
- "greedy": the native (CPU) backend generates greedily (temperature 0) with the weights so
  stored; the float32 model then predicts every position given the same codes before it
  (teacher forced). A trained model's greedy output is often nearly constant (its distinct
  codes are counted), hence also
- "real": the first seconds of the test files of the model's own data, teacher forced
  through the float32 model and the model with its matrices rounded as stored
  (`evaluate weights=`, the kernel's own arithmetic: tested equal).
Each gives the fraction of positions whose most likely code is not the float32 model's,
and the largest gap between the float32 model's top two logits at those positions (in
standard deviations of its logits: a near-tie is below 2^-5, the tests' tolerance). The NLL
a precision costs: `evaluate weights=<precision>`.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

TOLERANCE = 2 ** -5  # of the logits' standard deviation


def _compare(model, rounded, precision: str, codes, chosen=None) -> dict:
    """codes [B, lookback + n]: the float32 model's argmax over the n positions against
    `chosen` (the kernel's codes) or, if None, the argmax of `rounded` (as_stored's model)."""
    import torch
    with torch.no_grad():
        logits = model(codes)[0]
        own = rounded(codes)[0].argmax(-1)
    picked = own if chosen is None else chosen
    top2 = logits.topk(2, dim=-1).values
    gap = (top2[..., 0] - top2[..., 1]) / logits.std()
    differs = picked != logits.argmax(-1)
    return {"precision": precision, "positions": picked.numel(),
            "distinct_codes": picked.unique().numel(),
            "differs_from_fp32": differs.float().mean().item(),
            "largest_gap_where_differs_sd": gap[differs].max().item() if differs.any() else None,
            "beyond_tolerance": int((differs & (gap >= TOLERANCE)).sum()),
            "differs_from_as_stored": (picked != own).float().mean().item()}


def greedy(model, rounded, precision: str, streams: int, length: int, threads=None) -> dict:
    import torch

    from samplernn import generate, silence_code
    out = generate(model, streams, length, temperature=0, precision=precision, threads=threads)
    silence = silence_code(model.config.q_type, model.config.q_levels)
    codes = torch.cat([torch.full((streams, model.lookback), silence), out], 1)
    return {"positions_from": "greedy", **_compare(model, rounded, precision, codes, out)}


def real(model, rounded, precision: str, data, streams: int, length: int) -> dict:
    """The first `length` samples of up to `streams` test files (as long as the shortest)."""
    import torch

    from samplernn.audio import pcm16_to_float
    from samplernn.quantization import quantize, silence_code
    files = data.files("test")[:streams]
    n = min([length] + [f["n_samples"] for f in files]) // model.lookback * model.lookback
    wav = torch.from_numpy(pcm16_to_float(
        [data.samples[f["offset"]:f["offset"] + n] for f in files]))
    cfg = model.config
    codes = quantize(wav, cfg.q_type, cfg.q_levels)
    silence = torch.full((len(files), model.lookback), silence_code(cfg.q_type, cfg.q_levels))
    return {"positions_from": "real",
            **_compare(model, rounded, precision, torch.cat([silence, codes], 1))}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="precision_check", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--seconds", type=float, default=1.0, help="generated per stream")
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--precisions", nargs="+", default=["bf16", "int8"])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    from samplernn.checkpoint import load_checkpoint
    from samplernn.data import PreparedDataset
    from samplernn.errors import ConfigError, one_line_errors
    from samplernn.sampler.weights import as_stored
    with one_line_errors():
        model, info = load_checkpoint(args.checkpoint)
        if model.config.conditioned or model.config.has_features:
            raise ConfigError(f"{args.checkpoint} is conditioned (labels or features); this "
                              "check takes an unconditioned model")
        data = PreparedDataset(info["run_config"]["dataset"]["path"])
        rate = info.get("sample_rate") or 16000
        length = max(1, int(args.seconds * rate) // model.lookback) * model.lookback
        for precision in args.precisions:
            rounded = as_stored(model, precision)  # built once for both sets of positions
            for row in (greedy(model, rounded, precision, args.streams, length, args.threads),
                        real(model, rounded, precision, data, args.streams, length)):
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
