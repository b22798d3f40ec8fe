"""What storing a model's weights in bf16 or int8 does to its greedy codes, measured.

    python scripts/precision_check.py <run dir>/checkpoints/best.pt [--seconds 1] [--streams 4]

For each precision the native (CPU) backend generates greedily (temperature 0); the float32
model then predicts every position given the same codes before it (teacher forced). Printed
per precision, as JSON: the fraction of positions whose code is not the float32 argmax, the
largest gap between the float32 model's top two logits at those positions (in standard
deviations of its logits: a near-tie is below 2^-5, the tests' tolerance), and the fraction
not the argmax of the model with its matrices rounded as stored (`evaluate weights=`), which
is the kernel's own arithmetic. The NLL a precision costs: `evaluate weights=<precision>`.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

TOLERANCE = 2 ** -5  # of the logits' standard deviation


def agreement(model, precision: str, streams: int, length: int, threads=None) -> dict:
    import torch

    from samplernn import generate, silence_code
    from samplernn.sampler.weights import as_stored
    lb = model.lookback
    out = generate(model, streams, length, temperature=0, precision=precision, threads=threads)
    silence = silence_code(model.config.q_type, model.config.q_levels)
    codes = torch.cat([torch.full((streams, lb), silence), out], 1)
    with torch.no_grad():
        logits = model(codes)[0]
        own = as_stored(model, precision)(codes)[0].argmax(-1)
    top2 = logits.topk(2, dim=-1).values
    gap = (top2[..., 0] - top2[..., 1]) / logits.std()
    differs = out != logits.argmax(-1)
    return {"precision": precision, "positions": out.numel(),
            "differs_from_fp32": differs.float().mean().item(),
            "largest_gap_where_differs_sd": gap[differs].max().item() if differs.any() else None,
            "beyond_tolerance": int((differs & (gap >= TOLERANCE)).sum()),
            "differs_from_as_stored": (out != own).float().mean().item()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="precision_check", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--seconds", type=float, default=1.0, help="generated per stream")
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--precisions", nargs="+", default=["bf16", "int8"])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    from samplernn.checkpoint import load_checkpoint
    from samplernn.errors import one_line_errors
    with one_line_errors():
        model, info = load_checkpoint(args.checkpoint)
        rate = info.get("sample_rate") or 16000
        length = max(1, int(args.seconds * rate) // model.lookback) * model.lookback
        for precision in args.precisions:
            print(json.dumps(agreement(model, precision, args.streams, length, args.threads)),
                  flush=True)


if __name__ == "__main__":
    main()
