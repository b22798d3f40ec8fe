"""Fetch audio from a URL or a local path into a folder, unpacking zip/tar archives.

    python datasets/download.py <url-or-path> <dest-folder> [--only .ogg .flac]

<url-or-path>: http(s)://, ftp:// or file:// URL, or a local file or folder (so every recipe
can be run offline from a manual download). Archives (.zip, .tar, .tar.gz, .tgz, .tar.bz2,
.tar.xz) are unpacked into <dest-folder>/<archive name>/; other files are copied into
<dest-folder>. Downloads go through pooch (retries, --sha256 checked, a temporary name until
complete) and unpacking to a hidden folder renamed when complete, so an interrupted run
leaves nothing half-written; a finished target is not fetched again. A URL that cannot be
fetched or a missing file is one line. Then prepare the folder (the command it prints).
"""

import argparse
import os
import shutil
import sys
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


def _download(url: str, dest_dir: Path, sha256: str | None) -> Path:
    """URL -> dest_dir/<file name>, by pooch: retried, checked against sha256 when given,
    written under a temporary name until complete; a finished file is not fetched again."""
    import pooch
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name or "download"
    known = f"sha256:{sha256}" if sha256 else None
    fetcher = pooch.create(path=dest_dir, base_url="", registry={name: known}, urls={name: url},
                           retry_if_failed=2)
    pooch.get_logger().setLevel("ERROR")  # its retries are ours to report, in one line
    print(f"downloading {url} into {dest_dir}", flush=True)
    return Path(fetcher.fetch(name, progressbar=sys.stderr.isatty()))


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


def fetch(src: str, dest_dir, only: tuple[str, ...] | None = None,
          sha256: str | None = None) -> Path:
    """Bring `src` (URL, file:// URL, local file or folder) into dest_dir; returns the folder
    to prepare: the unpacked archive folder, dest_dir for a single file, or a local folder as
    it is. sha256: the download's expected hash."""
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
        path = _download(src, dest_dir, sha256)
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
    parser.add_argument("--sha256", help="the download's expected SHA-256 (checked)")
    args = parser.parse_args()
    made = not Path(args.dest).exists()
    try:
        folder = fetch(args.src, args.dest, tuple(args.only) if args.only else None, args.sha256)
    except (OSError, ValueError) as error:  # requests' errors are OSErrors too
        if made and Path(args.dest).is_dir() and not any(Path(args.dest).iterdir()):
            Path(args.dest).rmdir()  # nothing left behind
        why = " ".join(str(error).split())[:400]
        hint = "" if isinstance(error, FileNotFoundError) else (
            "; check the URL and the connection, or download it by hand and give its path")
        print(f"error: could not fetch {args.src}: {why}{hint}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"ready: {folder}\nnext:  {_prepare_command()} source={folder} name=<name>")


def _prepare_command() -> str:
    """How this checkout's environment runs prepare (see samplernn.commands)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from samplernn.commands import command
    return command("prepare")


if __name__ == "__main__":
    main()
