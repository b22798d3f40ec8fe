"""Fetch audio from a URL or a local path into a folder, unpacking zip/tar archives.

    python datasets/download.py <url-or-path> <dest-folder> [--only .ogg .flac]

<url-or-path>: http(s)://, ftp:// or file:// URL, or a local file or folder (so every recipe
can be run offline from a manual download). Archives (.zip, .tar, .tar.gz, .tgz, .tar.bz2,
.tar.xz) are unpacked into <dest-folder>/<archive name>/; other files are copied into
<dest-folder>. Downloads and unpacking go to hidden temporary names that are renamed when
complete, so an interrupted run leaves nothing half-written; a finished target is not
fetched again. Then prepare the folder: python datasets/prepare.py source=<dest> name=<name>
"""

import argparse
import os
import shutil
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

ARCHIVES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


def _archive_stem(name: str) -> str | None:
    """The folder name for an archive file name, or None when it is not an archive."""
    for ext in ARCHIVES:
        if name.lower().endswith(ext):
            return name[:-len(ext)]
    return None


def _local_path(src: str) -> Path | None:
    parsed = urllib.parse.urlparse(src)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if not parsed.scheme or len(parsed.scheme) == 1:      # a plain path (C:\... on Windows)
        return Path(src).expanduser()
    return None


def _download(url: str, dest_dir: Path) -> Path:
    """URL -> dest_dir/<file name>, via a .partial file renamed when complete."""
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name or "download"
    target = dest_dir / name
    if target.exists():
        print(f"{target} already downloaded")
        return target
    partial = dest_dir / f".{name}.partial"
    try:
        from tqdm import tqdm
        with urllib.request.urlopen(url) as response, open(partial, "wb") as out:
            size = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=size, unit="B", unit_scale=True, desc=name) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return target


def _safe_members(names: list[str], root: Path, archive: Path) -> None:
    root = root.resolve()
    for name in names:
        if not (root / name).resolve().is_relative_to(root):
            raise ValueError(f"{archive} holds {name!r}, which points outside the folder it is "
                             "unpacked into; refusing to unpack it")


def _keep(name: str, only: tuple[str, ...] | None) -> bool:
    return only is None or name.lower().endswith(only)


def extract(archive: Path, dest_dir: Path, only: tuple[str, ...] | None = None) -> Path:
    """Unpack a zip/tar archive into dest_dir/<archive stem>/ (all at once, or nothing);
    `only`: keep just the members whose names end with one of these suffixes."""
    target = dest_dir / _archive_stem(archive.name)
    if target.exists():
        print(f"{target} already unpacked")
        return target
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=dest_dir))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                names = [n for n in z.namelist() if _keep(n, only)]
                _safe_members(names, tmp, archive)
                z.extractall(tmp, members=names)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:
                members = [m for m in t.getmembers() if m.isdir() or _keep(m.name, only)]
                _safe_members([m.name for m in members], tmp, archive)
                t.extractall(tmp, members=members, filter="data")
        else:
            raise ValueError(f"{archive} is named like an archive but is not a zip or tar file; "
                             "download it again")
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def fetch(src: str, dest_dir, only: tuple[str, ...] | None = None) -> Path:
    """Bring `src` (URL, file:// URL, local file or folder) into dest_dir; returns the folder
    to prepare: the unpacked archive folder, dest_dir for a single file, or a local folder as
    it is."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    only = tuple(s.lower() for s in only) if only else None
    local = _local_path(src)
    if local is not None:
        if not local.exists():
            raise FileNotFoundError(f"{local} does not exist; give a URL or the path of a file "
                                    "you downloaded")
        if local.is_dir():
            return local
        path = local
    else:
        path = _download(src, dest_dir)
    if _archive_stem(path.name) is not None:
        return extract(path, dest_dir, only)
    if local is not None and local.resolve().parent != dest_dir.resolve():
        shutil.copy2(local, dest_dir / local.name)
    return dest_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="URL, file:// URL, local archive, audio file or folder")
    parser.add_argument("dest", help="folder to put it in")
    parser.add_argument("--only", nargs="+", metavar="SUFFIX",
                        help="keep only archive members ending with these (e.g. .ogg)")
    args = parser.parse_args()
    folder = fetch(args.src, args.dest, tuple(args.only) if args.only else None)
    print(f"ready: {folder}\nnext:  python datasets/prepare.py source={folder} name=<name>")


if __name__ == "__main__":
    main()
