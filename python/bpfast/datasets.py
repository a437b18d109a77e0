"""MNIST and Fashion-MNIST, loaded as the book's ``dataset/mnist.py`` loads them.

``load_mnist(normalize=True, flatten=True, one_hot_label=False)`` returns
``(x_train, t_train), (x_test, t_test)`` with the book's shapes and dtypes. It
reads the four IDX files (gzipped or not) from the first folder that holds all
of them, in this order:

1. ``data_dir=``;
2. the folders in ``$BPFAST_DATA`` (separated by ``os.pathsep``);
3. the user's cache folder, :func:`default_cache_dir`;
4. for Fashion-MNIST, the Debian package ``dataset-fashion-mnist``
   (``/usr/share/datasets/fashion-mnist``).

Each folder ``D`` is looked at as ``D/<dataset>/`` and then as ``D/`` itself.
When no folder has them, the missing files are downloaded into
``<cache>/<dataset>/`` from the mirrors in :data:`MIRRORS` (or
``$BPFAST_MNIST_MIRRORS`` / ``$BPFAST_FASHION_MNIST_MIRRORS``, or ``mirrors=``),
each checked against the md5 of its gzip or of its decompressed bytes.

Every file is parsed once: the pixels and labels are kept as uncompressed
``.npy`` files under ``<cache>/parsed/``, keyed by the source file's path, size,
times and md5, so a warm load only reads those. Nothing is ever written beside
the data files themselves. The module never prints; a download shows a
``tqdm.auto`` progress bar when tqdm is installed.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import json
import os
import struct
import sys
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, NamedTuple

import numpy as np

__all__ = [
    "DATASETS",
    "MIRRORS",
    "DatasetError",
    "DatasetNotFoundError",
    "default_cache_dir",
    "load_mnist",
]

#: The dataset names ``load_mnist(dataset=...)`` accepts.
DATASETS: tuple[str, ...] = ("mnist", "fashion-mnist")

#: Base URLs tried in turn for each dataset's four files. Replace a tuple (or
#: set ``$BPFAST_MNIST_MIRRORS`` / ``$BPFAST_FASHION_MNIST_MIRRORS`` to base URLs
#: separated by spaces or commas, or pass ``mirrors=``) to use other mirrors.
MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",  # the book's loader today, torchvision
        "https://storage.googleapis.com/cvdf-datasets/mnist/",  # TensorFlow's
        "http://yann.lecun.com/exdb/mnist/",  # the original, often refuses scripts
    ),
    "fashion-mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
}

#: Seconds a download may wait on the network before that mirror counts as down.
DOWNLOAD_TIMEOUT = 20.0

_TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}

# The book's key_file: the four files of either dataset.
_FILES = {
    "train_img": "train-images-idx3-ubyte.gz",
    "train_label": "train-labels-idx1-ubyte.gz",
    "test_img": "t10k-images-idx3-ubyte.gz",
    "test_label": "t10k-labels-idx1-ubyte.gz",
}

# Folders a system package installs the data into.
_SYSTEM_DIRS: dict[str, tuple[Path, ...]] = {
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
}

_ROWS = _COLS = 28
_IMAGE_MAGIC, _LABEL_MAGIC = 2051, 2049
_CACHE_FORMAT = 1
_USER_AGENT = "bpfast-datasets (Python urllib)"


class _Checksum(NamedTuple):
    gzip_md5: frozenset[str]  # md5s of .gz files known to hold these bytes
    md5: str  # md5 of the decompressed IDX bytes: what identifies the file


def _sums(gzip_md5: str, md5: str) -> _Checksum:
    return _Checksum(frozenset(gzip_md5.split()), md5)


# gzip bytes vary with the compressor, so a file is identified by the md5 of its
# decompressed bytes; the gzip md5s are those the mirrors serve and known
# recompressions (see shared/data/README.md).
_CHECKSUMS: dict[str, dict[str, _Checksum]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": _sums(
            "f68b3c2dcbeaaa9fbdd348bbdeb94873 1d473e58ef44e25f798984071547abb4",
            "6bbc9ace898e44ae57da46a324031adb"),
        "train-labels-idx1-ubyte.gz": _sums(
            "d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"),
        "t10k-images-idx3-ubyte.gz": _sums(
            "9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"),
        "t10k-labels-idx1-ubyte.gz": _sums(
            "ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"),
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": _sums(
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d cf8536b0aa1a6ac5fa3f23001093305c",
            "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
        "train-labels-idx1-ubyte.gz": _sums(
            "25c81989df183df01b3e8a0aad5dffbe 10bea18fdb374794d4bb42e356e600c9",
            "9018921c3c673c538a1fc5bad174d6f9"),
        "t10k-images-idx3-ubyte.gz": _sums(
            "bef4ecab320f06d8554ea6380940ec79 f78720b4224f21cce2f2ccf2d7a94c9a",
            "8181f5470baa50b63fa0f6fddb340f0a"),
        "t10k-labels-idx1-ubyte.gz": _sums(
            "bb300cfdad3c16e7a12a480ee83cd310 0d30e22e447f3c33dab9ed536400ac01",
            "15d484375f8d13e6eb1aabb0c3f46965"),
    },
}


class DatasetError(ValueError):
    """A dataset file is corrupt, truncated, not the file expected, or not available."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """No folder holds the dataset and it could not be downloaded; the message says how to provide it."""


class _DownloadFailed(Exception):
    def __init__(self, name: str, failures: list[str]) -> None:
        super().__init__(name)
        self.name, self.failures = name, failures


def default_cache_dir() -> Path:
    """The user's cache folder for bpfast (it need not exist yet).

    ``$XDG_CACHE_HOME/bpfast`` or ``~/.cache/bpfast`` on Linux and other Unixes,
    ``~/Library/Caches/bpfast`` on macOS, ``%LOCALAPPDATA%\\bpfast\\Cache`` on Windows.
    """
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "bpfast" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "bpfast"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "bpfast"


def load_mnist(
    normalize: bool = True,
    flatten: bool = True,
    one_hot_label: bool = False,
    *,
    dataset: str = "mnist",
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    mirrors: Sequence[str] | None = None,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Load MNIST (or Fashion-MNIST) as ``(x_train, t_train), (x_test, t_test)``.

    The book's signature and results, with N = 60000 for train and 10000 for test:

    - images ``x``: ``(N, 784)`` when ``flatten``, else ``(N, 1, 28, 28)``; float32 in
      [0, 1] when ``normalize`` (``x.astype(np.float32) / 255.0``, as the book), else uint8;
    - labels ``t``: float64 one-hot ``(N, 10)`` when ``one_hot_label``, else uint8 ``(N,)``.

    Every call returns fresh arrays the caller may modify.

    Args:
        dataset: ``"mnist"`` or ``"fashion-mnist"`` (see :data:`DATASETS`).
        data_dir: a folder to look in first, holding the four files directly or in a
            ``<dataset>`` subfolder.
        download: whether to download missing files into :func:`default_cache_dir`.
        mirrors: base URLs to download from, instead of ``$BPFAST_MNIST_MIRRORS`` /
            ``$BPFAST_FASHION_MNIST_MIRRORS`` or :data:`MIRRORS`.

    Raises:
        ValueError: ``dataset`` is not a known name.
        DatasetNotFoundError: the data is nowhere to be found and could not be
            downloaded; the message lists where it looked and how to provide it.
        DatasetError: a file is corrupt, truncated, inconsistent with its partner or
            belongs to another dataset; the message names the file.
    """
    _check_dataset(dataset)
    paths = _locate(dataset, data_dir, download, mirrors)
    arrays = {key: _read_idx(paths[name], dataset, name) for key, name in _FILES.items()}
    for split in ("train", "test"):
        images, labels = f"{split}_img", f"{split}_label"
        if len(arrays[images]) != len(arrays[labels]):
            raise DatasetError(
                f"{paths[_FILES[images]]} holds {len(arrays[images])} images but "
                f"{paths[_FILES[labels]]} holds {len(arrays[labels])} labels")

    def images_out(x: np.ndarray) -> np.ndarray:
        if normalize:
            x = x.astype(np.float32)
            x /= 255.0  # the book's two steps, so the values match it bit for bit
        return x if flatten else x.reshape(-1, 1, _ROWS, _COLS)

    def labels_out(t: np.ndarray) -> np.ndarray:
        if not one_hot_label:
            return t
        one_hot = np.zeros((t.size, 10))  # float64, as the book's _change_one_hot_label
        one_hot[np.arange(t.size), t] = 1
        return one_hot

    return ((images_out(arrays["train_img"]), labels_out(arrays["train_label"])),
            (images_out(arrays["test_img"]), labels_out(arrays["test_label"])))


# --- where the files are -------------------------------------------------------------------------

def _find(folder: Path, name: str) -> Path | None:
    """``folder/name`` (gzipped) or the same file decompressed, if either is there (a folder
    that cannot be searched holds nothing)."""
    for candidate in (folder / name, folder / name.removesuffix(".gz")):
        try:
            if candidate.is_file():
                return candidate
        except OSError:  # e.g. no permission to search the folder: as if absent
            return None
    return None


def _check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(map(repr, DATASETS))}")


def _look_in(folder: Path) -> tuple[dict[str, Path] | None, str]:
    """``(the four files' paths, "")`` when ``folder`` holds them all, else ``(None, how it looked)``."""
    found = {name: _find(folder, name) for name in _FILES.values()}
    if all(found.values()):
        return found, ""  # type: ignore[return-value]
    return None, _folder_state(folder, sum(path is not None for path in found.values()))


def _folder_state(folder: Path, have: int) -> str:
    """How a folder without all four files looked, for the not-found message."""
    if have:
        return f"{have} of 4 files"
    try:
        if folder.is_dir():
            return "no files" if os.access(folder, os.R_OK | os.X_OK) else "cannot be read"
        return "not a folder" if folder.exists() else "no such folder"
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"


def _folders_of(root: Path, dataset: str) -> tuple[Path, Path]:
    """Where a root holds a dataset: its ``<dataset>`` subfolder first, then the root itself."""
    return root / dataset, root


def _require_folder(dataset: str, data_dir: str | os.PathLike[str]) -> None:
    """Raise DatasetNotFoundError unless ``data_dir`` (or its ``<dataset>`` subfolder) holds the
    four files: for callers for whom that folder is the only acceptable source (the CLI's --data)."""
    _check_dataset(dataset)
    root = Path(data_dir).expanduser()
    looked = []
    for folder in _folders_of(root, dataset):
        found, state = _look_in(folder)
        if found:
            return
        looked.append(f"  {folder}  ({state})")
    raise DatasetNotFoundError("\n".join([
        f"{_TITLES[dataset]} is not available in {root}: neither it nor its {dataset!r} subfolder holds the four files "
        f"({', '.join(_FILES.values())}, gzipped or not).", "Looked in:", *looked]))


def _candidate_dirs(dataset: str, data_dir: str | os.PathLike[str] | None) -> list[tuple[Path, str]]:
    """The folders to look in, in order, each with what pointed there."""
    roots: list[tuple[Path, str]] = []
    if data_dir is not None:
        roots.append((Path(data_dir).expanduser(), "data_dir="))
    roots += [(Path(p).expanduser(), "$BPFAST_DATA")
              for p in os.environ.get("BPFAST_DATA", "").split(os.pathsep) if p]
    roots.append((default_cache_dir(), "cache"))
    folders = [(folder, origin) for root, origin in roots for folder in _folders_of(root, dataset)]
    return folders + [(folder, "Debian package") for folder in _SYSTEM_DIRS.get(dataset, ())]


def _mirror_env(dataset: str) -> str:
    return f"BPFAST_{dataset.upper().replace('-', '_')}_MIRRORS"


def _mirror_urls(dataset: str, mirrors: Sequence[str] | None) -> list[str]:
    if mirrors is None:
        mirrors = os.environ.get(_mirror_env(dataset), "").replace(",", " ").split() or MIRRORS[dataset]
    elif isinstance(mirrors, str):
        mirrors = [mirrors]
    return [url.rstrip("/") + "/" for url in mirrors]


def _locate(dataset: str, data_dir: str | os.PathLike[str] | None, download: bool,
            mirrors: Sequence[str] | None) -> dict[str, Path]:
    """The path of each of the four files, downloading the missing ones when allowed."""
    looked: list[str] = []
    for folder, origin in _candidate_dirs(dataset, data_dir):
        found, state = _look_in(folder)
        if found:
            return found
        looked.append(f"  {folder}  ({origin}: {state})")
    target = default_cache_dir() / dataset
    if not download:
        raise DatasetNotFoundError(_not_found_message(dataset, looked, target, "downloading is off (download=False)"))
    try:
        return _download_missing(dataset, target, _mirror_urls(dataset, mirrors))
    except _DownloadFailed as exc:
        tried = "\n".join(f"  {failure}" for failure in exc.failures) or "  (no mirrors given)"
        why = f"downloading {exc.name} failed:\n{tried}"
    except OSError as exc:
        why = f"the download folder cannot be written: {exc}"
    raise DatasetNotFoundError(_not_found_message(dataset, looked, target, why))


def _not_found_message(dataset: str, looked: list[str], target: Path, why: str) -> str:
    title = _TITLES[dataset]
    names = ", ".join(_FILES.values())
    ways = [
        f'pass data_dir="/path/to/folder" holding the four files (directly or in a "{dataset}" subfolder);',
        "set the environment variable BPFAST_DATA to such a folder;",
        f"copy the four files, keeping their names, into {target}{os.sep};",
    ]
    if dataset == "fashion-mnist":
        ways.append("install the Debian package dataset-fashion-mnist (sudo apt install dataset-fashion-mnist);")
    ways.append(f"go online and call load_mnist(dataset={dataset!r}) again with download=True: it downloads "
                f"into {target} from the mirrors in bpfast.datasets.MIRRORS, or from the base URLs in "
                f"${_mirror_env(dataset)} or mirrors=.")
    return "\n".join([
        f"{title} is not available: no folder holds its four files ({names}, gzipped or not), and {why}",
        "Looked in:", *looked,
        "To provide the data, do one of:", *(f"  - {way}" for way in ways),
    ])


# --- downloads -----------------------------------------------------------------------------------

def _download_missing(dataset: str, folder: Path, urls: list[str]) -> dict[str, Path]:
    """Fetch the files ``folder`` lacks, trying the mirrors in turn (the last good one first)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name in _FILES.values():
        found = _find(folder, name)
        if found is not None:
            paths[name] = found
            continue
        failures: list[str] = []
        for base in urls:
            try:
                data = _fetch(base + name, name)
                _verify_download(data, _CHECKSUMS[dataset][name])
            except (OSError, http.client.HTTPException, ValueError) as exc:
                if isinstance(exc, urllib.error.HTTPError):
                    exc.close()
                failures.append(f"{base}{name}: {exc}")
                continue
            with _atomic_file(folder / name) as out:
                out.write(data)
            paths[name] = folder / name
            urls = [base] + [url for url in urls if url != base]
            break
        else:
            raise _DownloadFailed(name, failures)
    return paths


def _fetch(url: str, desc: str) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT) as response:
        length = response.headers.get("Content-Length", "")
        total = int(length) if length.isdigit() else None
        data = bytearray()
        with _progress(total, desc) as update:
            while chunk := response.read(1 << 16):
                data += chunk
                update(len(chunk))
    if total is not None and len(data) != total:
        raise DatasetError(f"the download stopped after {len(data)} of {total} bytes")
    return bytes(data)


@contextlib.contextmanager
def _progress(total: int | None, desc: str) -> Iterator[Callable[[int], object]]:
    """A ``tqdm.auto`` bar's ``update`` when tqdm is installed, else a no-op."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        tqdm = None
    if tqdm is None:
        yield lambda n: None
        return
    with tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=False) as bar:
        yield bar.update


def _verify_download(data: bytes, expected: _Checksum) -> None:
    """Accept the bytes if their gzip md5 is known or their decompressed md5 is the expected one."""
    gzip_md5 = _md5(data)
    if gzip_md5 in expected.gzip_md5:
        return
    try:
        raw_md5 = _md5(_decompress(data))
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"not a valid gzip file ({exc})") from None
    if raw_md5 != expected.md5:
        raise DatasetError(
            f"checksum mismatch: md5 {gzip_md5} (as served) and {raw_md5} (decompressed); expected "
            f"{' or '.join(sorted(expected.gzip_md5))} (gzip) or {expected.md5} (decompressed)")


@contextlib.contextmanager
def _atomic_file(dest: Path) -> Iterator[IO[bytes]]:
    """A temporary file beside ``dest`` that replaces it once the block succeeds."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --- parsing and the parsed cache ----------------------------------------------------------------

def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _decompress(data: bytes) -> bytes:
    """Gunzip ``data``; bytes without the gzip magic are taken as already decompressed."""
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def _parse_idx(raw: bytes, path: Path, images: bool) -> np.ndarray:
    """uint8 ``(N, 784)`` pixels of an IDX image file or ``(N,)`` labels of a label file."""
    kind, magic, header = ("image", _IMAGE_MAGIC, 16) if images else ("label", _LABEL_MAGIC, 8)
    if len(raw) < header:
        raise DatasetError(f"{path}: {len(raw)} bytes, too short for an IDX {kind} file header")
    fields = struct.unpack_from(f">{header // 4}I", raw)
    if fields[0] != magic:
        other = {_IMAGE_MAGIC: " (an image file)", _LABEL_MAGIC: " (a label file)"}.get(fields[0], "")
        raise DatasetError(f"{path}: magic number {fields[0]}{other}, expected {magic} for an IDX {kind} file")
    count = fields[1]
    if images and fields[2:] != (_ROWS, _COLS):
        raise DatasetError(f"{path}: images of {fields[2]}x{fields[3]} pixels, expected {_ROWS}x{_COLS}")
    item = _ROWS * _COLS if images else 1
    if len(raw) != header + count * item:
        raise DatasetError(f"{path}: the header announces {count} {kind}s ({header + count * item} bytes) "
                           f"but the decompressed file has {len(raw)} bytes")
    array = np.frombuffer(raw, np.uint8, offset=header).reshape((count, item) if images else (count,))
    if not images and count and int(array.max()) > 9:
        raise DatasetError(f"{path}: label {int(array.max())} is outside 0..9")
    return array.copy()


def _cache_paths(source: Path) -> tuple[Path, Path]:
    """The parsed cache of ``source``: its ``.npy`` and the ``.json`` that says what it was made from."""
    tag = hashlib.sha256(os.fsencode(source)).hexdigest()[:16]  # (any bytes the file system allows)
    base = default_cache_dir() / "parsed" / f"{source.name.removesuffix('.gz')}-{tag}"
    return base.with_name(base.name + ".npy"), base.with_name(base.name + ".json")


def _source_key(source: Path) -> dict[str, object]:
    st = source.stat()  # ctime and inode catch a replacement that kept size and mtime
    return {"source": str(source), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns, "ino": st.st_ino}


def _read_cached(source: Path, npy: Path, meta_path: Path, key: dict[str, object]) -> tuple[np.ndarray, str] | None:
    """``(array, md5 of the decompressed source)`` from the parsed cache, or None when stale."""
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != _CACHE_FORMAT or meta.get("source") != key["source"]:
            return None
        if any(meta.get(k) != v for k, v in key.items()):
            # Touched, copied or replaced: the bytes decide (one md5 of the file, no parsing).
            if _md5(source.read_bytes()) != meta["source_md5"]:
                return None
            meta.update(key)
            with contextlib.suppress(OSError), _atomic_file(meta_path) as out:
                out.write(json.dumps(meta).encode())
        st = npy.stat()
        if (st.st_size, st.st_mtime_ns) != (meta["npy_size"], meta["npy_mtime_ns"]):
            return None
        array = np.load(npy, allow_pickle=False)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if array.dtype != np.uint8 or list(array.shape) != meta["shape"]:
        return None
    return array, meta["md5"]


def _write_cached(npy: Path, meta_path: Path, array: np.ndarray, meta: dict[str, object]) -> None:
    """Store the parsed array; a cache that cannot be written only costs time later."""
    try:
        npy.parent.mkdir(parents=True, exist_ok=True)
        with _atomic_file(npy) as out:
            np.save(out, array, allow_pickle=False)
        st = npy.stat()
        meta.update(format=_CACHE_FORMAT, shape=list(array.shape), npy_size=st.st_size, npy_mtime_ns=st.st_mtime_ns)
        with _atomic_file(meta_path) as out:
            out.write(json.dumps(meta).encode())
    except OSError:
        pass


def _check_identity(md5: str, path: Path, dataset: str, name: str) -> None:
    """Refuse a known file of another dataset (or another split) found under this one's name."""
    for other_dataset, files in _CHECKSUMS.items():
        for other_name, sums in files.items():
            if sums.md5 == md5 and (other_dataset, other_name) != (dataset, name):
                raise DatasetError(
                    f"{path} holds {_TITLES[other_dataset]}'s {other_name}, not {_TITLES[dataset]}'s {name}; "
                    f"keep each dataset in a folder named after it ({', '.join(DATASETS)})")


def _read_idx(path: Path, dataset: str, name: str) -> np.ndarray:
    """The uint8 array in one IDX file, from the parsed cache when it is current."""
    source = path.resolve()
    npy, meta_path = _cache_paths(source)
    key = _source_key(source)
    cached = _read_cached(source, npy, meta_path, key)
    images = "-images-" in name
    if cached is not None and (cached[0].ndim == 2) != images:  # parsed as the other kind: parse again
        cached = None
    if cached is not None:
        array, md5 = cached
        _check_identity(md5, path, dataset, name)
        return array
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path} cannot be read ({exc.strerror or exc})") from None
    try:
        raw = _decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path} is not a valid gzip file ({exc}); delete it or replace it with a good copy") from None
    md5 = _md5(raw)
    _check_identity(md5, path, dataset, name)
    array = _parse_idx(raw, path, images=images)
    _write_cached(npy, meta_path, array, {**key, "source_md5": _md5(data), "md5": md5})
    return array
