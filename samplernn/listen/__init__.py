"""Listening tests: the paper's human half of the evaluation, built from runs, served to
raters, counted.

    build.py    the stimuli (generated, real, loudness-matched, under opaque ids) and the trials
    store.py    the SQLite database: trials, raters, what each was dealt, every answer
    server.py   the web server (Flask on waitress), page.py its pages
    stats.py    Wilson intervals, binomial tests, MUSHRA means and post-screening
    results.py  the numbers as text, JSON, a chart, beside the runs and in W&B

`run(cfg)` is the command (samplernn-listen / scripts/listen.py, configs/listen.yaml).
"""

import json
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError


def run(cfg: DictConfig):
    test = Path(cfg.test)
    if cfg.action == "build":
        from .build import build, condition_sources
        conditions = condition_sources(OmegaConf.to_container(cfg.conditions)
                                       if OmegaConf.is_config(cfg.conditions) else cfg.conditions,
                                       cfg.real)
        if cfg.items_per_rater is not None and cfg.items_per_rater < 1:
            raise ConfigError(f"items_per_rater={cfg.items_per_rater}: give at least 1 (or null "
                              "for all)")
        temperature = (OmegaConf.to_container(cfg.temperature)
                       if OmegaConf.is_config(cfg.temperature) else cfg.temperature)
        meta = build(test, conditions, mode=str(cfg.mode), n_items=cfg.n_items,
                     seconds=cfg.seconds, temperature=temperature, seed=cfg.seed,
                     allow_tie=cfg.allow_tie, anchor_hz=cfg.anchor_hz,
                     loudness_lufs=cfg.loudness_lufs, items_per_rater=cfg.items_per_rater,
                     device=cfg.device, overwrite=cfg.overwrite)
        quiet = ""
        if meta["quiet"]:
            quiet = f"; too quiet to loudness-match: {', '.join(meta['quiet'])}"
        print(f"built {test}: {meta['mode']} test of {len(conditions)} conditions, "
              f"{meta['n_items']} items of {meta['seconds']:g} s{quiet}\n"
              f"serve it: samplernn-listen serve {test}")
        return meta
    from .results import compute
    if cfg.action == "serve":
        compute(test)  # a clear line if it is not a test
        from .server import serve
        serve(test, host=cfg.host, port=cfg.port)
        return None
    from .results import text, write
    result = compute(test)
    written = write(test, result)
    if cfg.wandb and result["answers"]:
        from ..logger import log_listening
        hint = log_listening(result, test / "results.png", test)
        if hint:
            print(f"W&B (offline): wandb sync {hint}", file=sys.stderr)
    if cfg.json:
        print(json.dumps(result, indent=2))
    else:
        print(text(result))
        print("written: " + ", ".join(str(p) for p in written), file=sys.stderr)
    return result
