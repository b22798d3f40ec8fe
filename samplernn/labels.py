"""Labels: one per file (a speaker, an instrument, an album), for global conditioning.

prepare takes them from the folders (`labels=folders`: a file's first-level subfolder under
the source is its label) or from a file of `path,label` rows (`labels=<file>.csv` or
`.tsv`; paths relative to the source; a first row `path,label` is a header). The manifest
records each file's `label` and the vocabulary `labels` (sorted; a label's index is its
place there), which is what a conditioned model's embedding rows are numbered by.

Generation and evaluation name labels by name: `label=a`, `label=[a,b]`, or a mix of
embeddings `label_mix=[a:0.7,b:0.3]` (`parse_mix`).
"""

import csv
import hashlib
import math
from pathlib import Path

from .errors import BadFile, ConfigError, NotFound

FOLDERS = "folders"


OPTIONS = ("labels", "labels_sha256")  # what labels add to prepare's options


def spec_options(spec, base: Path) -> dict:
    """The options a label spec adds to prepare's (what makes a dataset differ): the spec
    (`folders`, or the label file's absolute path) and the label file's content hash; none
    without labels (the manifest of unlabelled data is as it was before labels)."""
    if spec in (None, ""):
        return {}
    if spec == FOLDERS:
        return {"labels": FOLDERS}
    path = (base / Path(str(spec)).expanduser()).resolve()
    if not path.is_file():
        raise NotFound(f"labels={spec}: no such file; give labels=folders (a folder per label "
                       "under source) or a .csv/.tsv file of path,label rows")
    return {"labels": str(path), "labels_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def read_label_file(path: Path) -> dict[str, str]:
    """{relative path: label} from a .csv or .tsv file of path,label rows."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    out: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        for n, row in enumerate(csv.reader(f, delimiter=delimiter), 1):
            if not row or all(not c.strip() for c in row):
                continue
            if n == 1 and [c.strip().lower() for c in row[:2]] == ["path", "label"]:
                continue  # a header
            if len(row) != 2:
                raise BadFile(f"{path}, row {n}: {len(row)} fields; each row is path{delimiter}"
                              "label")
            rel, label = (c.strip() for c in row)
            if not label:
                raise BadFile(f"{path}, row {n}: {rel} has an empty label; give every file one")
            key = Path(rel).as_posix()
            if key in out and out[key] != label:
                raise BadFile(f"{path}, row {n}: {rel} is labelled twice ({out[key]!r} and "
                              f"{label!r}); keep one")
            out[key] = label
    if not out:
        raise BadFile(f"{path} holds no path,label rows")
    return out


def assign(spec: str | None, kept: list[dict], source: Path) -> list[str] | None:
    """Each kept record's `label` (from its `source`, a path relative to the source folder);
    returns the vocabulary, or None without labels. A file without a label is one line."""
    if spec is None:
        return None
    if spec == FOLDERS:
        for r in kept:
            parts = Path(r["source"]).parts
            if len(parts) < 2:
                raise BadFile(f"labels=folders: {source / r['source']} lies directly in the "
                              "source folder; move it into a folder named by its label")
            r["label"] = parts[0]
    else:
        table = read_label_file(Path(spec))
        missing = [r["source"] for r in kept if Path(r["source"]).as_posix() not in table]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise BadFile(f"labels={spec}: {missing[0]}{more} under {source} has no row; add "
                          "a path,label row for every audio file")
        for r in kept:
            r["label"] = table[Path(r["source"]).as_posix()]
    return sorted({r["label"] for r in kept})


def of_checkpoint(info: dict) -> list[str]:
    """The labels a checkpoint's model was trained on (its info from load_checkpoint); [] for
    an unconditioned one or a checkpoint from before labels."""
    return list((info.get("dataset") or {}).get("labels") or [])


def index(names: list[str], name: str, what: str = "label") -> int:
    """A label's index in the vocabulary; an unknown one is one line naming the known ones."""
    if not names:
        raise ConfigError(f"{what}={name}: this model was trained without labels; drop {what}=")
    if name not in names:
        raise ConfigError(f"{what}={name!r} is unknown; the labels are {', '.join(names)}")
    return names.index(name)


def parse_mix(names: list[str], text) -> list[float]:
    """`a:0.7,b:0.3` (or a list of `a:0.7` items) -> weights over the vocabulary (they need
    not sum to 1: the embedding is the weighted sum)."""
    if not isinstance(text, str):
        text = ",".join(str(item) for item in text)
    weights = [0.0] * len(names)
    for part in str(text).split(","):
        name, sep, value = part.strip().rpartition(":")
        if not sep or not name:
            raise ConfigError(f"label_mix={text!r}: write it as [label:weight,label:weight] "
                              "(e.g. [a:0.7,b:0.3])")
        try:
            weight = float(value)
        except ValueError:
            raise ConfigError(f"label_mix={text!r}: {value!r} is not a number") from None
        if not math.isfinite(weight):
            raise ConfigError(f"label_mix={text!r}: {value!r} is not a finite number")
        weights[index(names, name.strip(), "label_mix")] += weight
    return weights
