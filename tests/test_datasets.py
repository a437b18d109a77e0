"""bpfast.datasets: IDX parsing, where the files are looked for, downloads, the parsed cache.

No test touches the internet: the mirrors point at a closed port on 127.0.0.1 unless a test
serves files itself, and a guard refuses any other host. HOME, XDG_CACHE_HOME and
BPFAST_DATA point into tmp_path, so the real user cache is never read or written.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import socket
import sys
import threading
import types
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from bpfast import datasets as ds

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"
NAMES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)


# --- small IDX files the tests write -------------------------------------------------------------

def idx_images(pixels: np.ndarray, *, magic: int = 2051, count: int | None = None,
               rows: int = 28, cols: int = 28) -> bytes:
    header = np.array([magic, len(pixels) if count is None else count, rows, cols], ">u4")
    return header.tobytes() + np.ascontiguousarray(pixels, np.uint8).tobytes()


def idx_labels(labels: np.ndarray, *, magic: int = 2049, count: int | None = None) -> bytes:
    header = np.array([magic, len(labels) if count is None else count], ">u4")
    return header.tobytes() + np.ascontiguousarray(labels, np.uint8).tobytes()


def tiny(n_train: int = 6, n_test: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """Random pixels and labels, keyed by file name: images (N, 784), labels (N,)."""
    rng = np.random.default_rng(seed)
    return {
        TRAIN_IMAGES: rng.integers(0, 256, (n_train, 784), dtype=np.uint8),
        TRAIN_LABELS: rng.integers(0, 10, n_train, dtype=np.uint8),
        TEST_IMAGES: rng.integers(0, 256, (n_test, 784), dtype=np.uint8),
        TEST_LABELS: rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def raw_files(arrays: dict[str, np.ndarray]) -> dict[str, bytes]:
    """The decompressed IDX bytes of each file."""
    return {name: (idx_images if "images" in name else idx_labels)(array) for name, array in arrays.items()}


def write_files(folder: Path, raw: dict[str, bytes], *, compress: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in raw.items():
        if compress:
            (folder / name).write_bytes(gzip.compress(data, mtime=0))
        else:
            (folder / name.removesuffix(".gz")).write_bytes(data)
    return folder


def write_tiny(folder: Path, seed: int = 0, **kwargs: int) -> dict[str, np.ndarray]:
    arrays = tiny(seed=seed, **kwargs)
    write_files(folder, raw_files(arrays))
    return arrays


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def expect_checksums(monkeypatch: pytest.MonkeyPatch, raw: dict[str, bytes], dataset: str = "mnist") -> None:
    """Make the loader expect these files (as served gzipped with mtime=0) for ``dataset``."""
    sums = {name: ds._Checksum(frozenset({md5(gzip.compress(data, mtime=0))}), md5(data))
            for name, data in raw.items()}
    monkeypatch.setitem(ds._CHECKSUMS, dataset, sums)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def parsed_files(cache: Path) -> list[Path]:
    return sorted((cache / "bpfast" / "parsed").glob("*.npy"))


# --- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private HOME and cache, no system folders, mirrors that refuse, no way out to the internet."""
    cache = tmp_path / "xdg-cache"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "localappdata"))
    monkeypatch.setenv("BPFAST_DATA", str(tmp_path / "bpfast-data"))
    monkeypatch.delenv("BPFAST_MNIST_MIRRORS", raising=False)
    monkeypatch.delenv("BPFAST_FASHION_MNIST_MIRRORS", raising=False)
    dead = f"http://127.0.0.1:{closed_port()}/"
    monkeypatch.setitem(ds.MIRRORS, "mnist", (dead,))
    monkeypatch.setitem(ds.MIRRORS, "fashion-mnist", (dead,))
    monkeypatch.setattr(ds, "_SYSTEM_DIRS", {})
    monkeypatch.setattr(ds, "DOWNLOAD_TIMEOUT", 10.0)

    real_urlopen = urllib.request.urlopen

    def local_only(request, *args, **kwargs):
        url = request.full_url if isinstance(request, urllib.request.Request) else request
        host = urllib.parse.urlsplit(url).hostname
        assert host == "127.0.0.1", f"a test tried to reach {url}"
        return real_urlopen(request, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", local_only)
    return cache


@pytest.fixture
def server(tmp_path: Path):
    """An HTTP server on 127.0.0.1 serving tmp_path/www; yields (root folder, base URL, request log)."""
    root = tmp_path / "www"
    root.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}", requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


# --- the book's shapes and dtypes ----------------------------------------------------------------

@pytest.mark.parametrize("one_hot_label", [False, True])
@pytest.mark.parametrize("flatten", [True, False])
@pytest.mark.parametrize("normalize", [True, False])
def test_shapes_dtypes_and_values(tmp_path, normalize, flatten, one_hot_label):
    arrays = write_tiny(tmp_path / "data", n_train=6, n_test=4)
    (x, t), (xt, tt) = ds.load_mnist(normalize, flatten, one_hot_label, data_dir=tmp_path / "data")
    for images, labels, n, key in ((x, t, 6, "train"), (xt, tt, 4, "t10k")):
        pixels = arrays[f"{key}-images-idx3-ubyte.gz"]
        digits = arrays[f"{key}-labels-idx1-ubyte.gz"]
        assert images.shape == ((n, 784) if flatten else (n, 1, 28, 28))
        assert images.dtype == (np.float32 if normalize else np.uint8)
        # the book: x.astype(np.float32); x /= 255.0
        want = pixels.astype(np.float32) / np.float32(255.0) if normalize else pixels
        np.testing.assert_array_equal(images.reshape(n, 784), want)
        if one_hot_label:
            assert labels.shape == (n, 10) and labels.dtype == np.float64
            np.testing.assert_array_equal(labels, np.eye(10)[digits])
        else:
            assert labels.shape == (n,) and labels.dtype == np.uint8
            np.testing.assert_array_equal(labels, digits)
        assert images.flags.writeable and labels.flags.writeable


def test_fresh_arrays_every_call(tmp_path):
    write_tiny(tmp_path)
    (x, t), _ = ds.load_mnist(normalize=False, data_dir=tmp_path)
    x[:] = 0
    t[:] = 0
    (x2, t2), _ = ds.load_mnist(normalize=False, data_dir=tmp_path)
    assert x2.any() and t2.any()


def test_unknown_dataset_lists_the_names():
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar10'.*'mnist', 'fashion-mnist'"):
        ds.load_mnist(dataset="cifar10")


# --- where it looks ------------------------------------------------------------------------------

def test_subfolder_direct_and_uncompressed_layouts(tmp_path):
    sub = write_tiny(tmp_path / "a" / "mnist", seed=1)
    direct = write_tiny(tmp_path / "b", seed=2)
    plain = tiny(seed=3)
    write_files(tmp_path / "c", raw_files(plain), compress=False)
    for folder, arrays in (("a", sub), ("b", direct), ("c", plain)):
        (x, t), _ = ds.load_mnist(normalize=False, data_dir=tmp_path / folder)
        np.testing.assert_array_equal(x, arrays[TRAIN_IMAGES])
        np.testing.assert_array_equal(t, arrays[TRAIN_LABELS])


def test_search_order(tmp_path, monkeypatch, isolated):
    given = write_tiny(tmp_path / "given", seed=1)
    second_env = write_tiny(tmp_path / "env2" / "mnist", seed=2)
    cached = write_tiny(isolated / "bpfast" / "mnist", seed=3)
    monkeypatch.setenv("BPFAST_DATA", os.pathsep.join([str(tmp_path / "env1"), str(tmp_path / "env2")]))

    def first_train_images(**kwargs):
        return ds.load_mnist(normalize=False, download=False, **kwargs)[0][0]

    np.testing.assert_array_equal(first_train_images(data_dir=tmp_path / "given"), given[TRAIN_IMAGES])
    np.testing.assert_array_equal(first_train_images(), second_env[TRAIN_IMAGES])
    monkeypatch.delenv("BPFAST_DATA")
    np.testing.assert_array_equal(first_train_images(data_dir=tmp_path / "nowhere"), cached[TRAIN_IMAGES])


def test_system_folder_for_fashion_mnist(tmp_path, monkeypatch):
    arrays = write_tiny(tmp_path / "usr-share", seed=4)
    monkeypatch.setattr(ds, "_SYSTEM_DIRS", {"fashion-mnist": (tmp_path / "usr-share",)})
    (x, _), _ = ds.load_mnist(normalize=False, dataset="fashion-mnist", download=False)
    np.testing.assert_array_equal(x, arrays[TRAIN_IMAGES])
    with pytest.raises(ds.DatasetNotFoundError):
        ds.load_mnist(dataset="mnist", download=False)


def test_a_folder_missing_a_file_is_passed_over(tmp_path, isolated):
    write_tiny(tmp_path / "partial")
    (tmp_path / "partial" / TEST_LABELS).unlink()
    cached = write_tiny(isolated / "bpfast" / "mnist", seed=5)
    (x, _), _ = ds.load_mnist(normalize=False, data_dir=tmp_path / "partial", download=False)
    np.testing.assert_array_equal(x, cached[TRAIN_IMAGES])


def test_offline_message_lists_every_way_to_provide_the_data(tmp_path, isolated):
    write_tiny(tmp_path / "partial")
    (tmp_path / "partial" / TEST_LABELS).unlink()
    with pytest.raises(ds.DatasetNotFoundError) as info:
        ds.load_mnist(data_dir=tmp_path / "partial", download=False)
    assert isinstance(info.value, ds.DatasetError) and isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    for needle in (*NAMES, "download=False", "data_dir=", "BPFAST_DATA", str(isolated / "bpfast" / "mnist"),
                   f"{tmp_path / 'partial'}  (data_dir=: 3 of 4 files)", "BPFAST_MNIST_MIRRORS"):
        assert needle in message
    assert "dataset-fashion-mnist" not in message
    with pytest.raises(ds.DatasetNotFoundError, match="apt install dataset-fashion-mnist"):
        ds.load_mnist(dataset="fashion-mnist", download=False)


def test_offline_download_names_each_mirror_and_the_ways_out(isolated):
    with pytest.raises(ds.DatasetNotFoundError) as info:
        ds.load_mnist()
    message = str(info.value)
    assert f"downloading {TRAIN_IMAGES} failed" in message
    assert ds.MIRRORS["mnist"][0] + TRAIN_IMAGES in message
    assert "BPFAST_DATA" in message and str(isolated / "bpfast" / "mnist") in message
    assert not list((isolated / "bpfast" / "mnist").iterdir())  # no partial files left behind


# --- files that must be refused ------------------------------------------------------------------

def _flip_middle_byte(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]


_GOOD = tiny()
# (case, file, its bytes on disk, message pattern)
BAD_FILES = [
    ("bad image magic", TRAIN_IMAGES, gzip.compress(idx_images(_GOOD[TRAIN_IMAGES], magic=2049)),
     "magic number 2049 \\(a label file\\), expected 2051"),
    ("bad label magic", TEST_LABELS, gzip.compress(idx_labels(_GOOD[TEST_LABELS], magic=1234)),
     "magic number 1234, expected 2049"),
    ("wrong count", TRAIN_IMAGES, gzip.compress(idx_images(_GOOD[TRAIN_IMAGES], count=7)),
     "announces 7 images"),
    ("truncated IDX", TRAIN_LABELS, gzip.compress(idx_labels(_GOOD[TRAIN_LABELS])[:-1]),
     "announces 6 labels"),
    ("short header", TEST_IMAGES, gzip.compress(b"\x00\x00\x08\x03"), "too short"),
    ("empty file", TEST_LABELS, b"", "too short"),
    ("not 28x28", TEST_IMAGES, gzip.compress(idx_images(_GOOD[TEST_IMAGES].reshape(-1, 28, 28)[:, :, :4],
                                                        rows=28, cols=4)),
     "28x4 pixels"),
    ("label out of range", TRAIN_LABELS, gzip.compress(idx_labels(np.array([1, 2, 10, 3, 4, 5]))),
     "label 10 is outside 0..9"),
    ("truncated gzip", TRAIN_IMAGES, gzip.compress(idx_images(_GOOD[TRAIN_IMAGES]))[:-100],
     "not a valid gzip file"),
    ("corrupt gzip", TRAIN_IMAGES, _flip_middle_byte(gzip.compress(idx_images(_GOOD[TRAIN_IMAGES]))),
     "not a valid gzip file"),
    ("gzip without its trailer", TRAIN_LABELS, gzip.compress(idx_labels(_GOOD[TRAIN_LABELS]))[:-8],
     "not a valid gzip file"),
]


@pytest.mark.parametrize("case, name, data, pattern", BAD_FILES, ids=[case[0] for case in BAD_FILES])
def test_bad_files_are_refused_and_named(tmp_path, isolated, case, name, data, pattern):
    folder = write_files(tmp_path / "data", raw_files(_GOOD))
    (folder / name).write_bytes(data)
    for _ in range(2):  # and again: nothing half-parsed was cached
        with pytest.raises(ds.DatasetError, match=pattern) as info:
            ds.load_mnist(data_dir=folder)
        assert str(folder / name) in str(info.value)
    assert not any(name.removesuffix(".gz") in p.name for p in parsed_files(isolated))


def test_image_and_label_counts_must_match(tmp_path):
    arrays = tiny()
    arrays[TEST_LABELS] = arrays[TEST_LABELS][:3]
    folder = write_files(tmp_path, raw_files(arrays))
    with pytest.raises(ds.DatasetError, match=r"t10k-images-idx3-ubyte.gz holds 4 images but .*"
                                              r"t10k-labels-idx1-ubyte.gz holds 3 labels"):
        ds.load_mnist(data_dir=folder)


def test_a_known_file_of_another_dataset_is_refused(tmp_path, monkeypatch):
    raw = raw_files(tiny())
    expect_checksums(monkeypatch, raw, dataset="fashion-mnist")
    folder = write_files(tmp_path / "fashion-stuff", raw)
    with pytest.raises(ds.DatasetError, match="holds Fashion-MNIST's train-images-idx3-ubyte.gz, not MNIST's"):
        ds.load_mnist(data_dir=folder)
    ds.load_mnist(data_dir=folder, dataset="fashion-mnist")
    with pytest.raises(ds.DatasetError, match="holds Fashion-MNIST's"):  # also from the parsed cache
        ds.load_mnist(data_dir=folder)


def test_a_folder_that_must_hold_the_data(tmp_path):
    """_require_folder (the CLI's --data): that folder or its dataset subfolder, nothing else."""
    write_tiny(tmp_path / "full" / "mnist")
    ds._require_folder("mnist", tmp_path / "full")  # the subfolder
    ds._require_folder("mnist", tmp_path / "full" / "mnist")  # the folder itself
    partial = write_files(tmp_path / "partial", raw_files(tiny()))
    (partial / TEST_LABELS).unlink()
    (tmp_path / "a-file").write_bytes(b"")
    for folder, state in ((tmp_path / "missing", "no such folder"), (partial, "3 of 4 files"),
                          (tmp_path / "a-file", "not a folder")):
        with pytest.raises(ds.DatasetNotFoundError, match=rf"MNIST is not available in {folder}(?s:.*)\({state}\)"):
            ds._require_folder("mnist", folder)
    with pytest.raises(ValueError, match="unknown dataset"):
        ds._require_folder("digits", tmp_path / "full")


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="file names there are text, not bytes")
def test_a_folder_whose_name_is_not_utf8(tmp_path):
    folder = tmp_path / os.fsdecode(b"lat\xe9n")  # a Latin-1 name: a lone surrogate in Python
    arrays = write_tiny(folder)
    for _ in range(2):  # parsed, then from the parsed cache (whose name hashes the path's bytes)
        (x_train, _), _ = ds.load_mnist(data_dir=folder, normalize=False)
        np.testing.assert_array_equal(x_train, arrays[TRAIN_IMAGES].reshape(-1, 784))


def test_an_unreadable_file_is_named(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    write_tiny(folder)
    real_read_bytes = Path.read_bytes

    def read_bytes(self):
        if self.name == TEST_LABELS:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.raises(ds.DatasetError, match=rf"{folder / TEST_LABELS} cannot be read \(Permission denied\)"):
        ds.load_mnist(data_dir=folder)


def test_a_folder_that_cannot_be_searched_is_passed_over(tmp_path, monkeypatch):
    locked, good = tmp_path / "locked", tmp_path / "good"
    write_tiny(locked)
    arrays = write_tiny(good, seed=1)
    monkeypatch.setenv("BPFAST_DATA", os.pathsep.join([str(locked), str(good)]))
    real_is_file = Path.is_file

    def is_file(self):
        if locked in self.parents:
            raise PermissionError(13, "Permission denied", str(self))
        return real_is_file(self)

    monkeypatch.setattr(Path, "is_file", is_file)
    (_, t_train), _ = ds.load_mnist()
    np.testing.assert_array_equal(t_train, arrays[TRAIN_LABELS])


def test_a_link_to_the_images_under_a_labels_name_is_refused(tmp_path):
    """The parsed cache is found by the resolved path: the images parsed from A must not come
    back as B's labels through a link to the same file."""
    a = tmp_path / "a"
    write_tiny(a)
    ds.load_mnist(data_dir=a)  # A's four files parsed and cached
    b = tmp_path / "b"
    b.mkdir()
    for name in NAMES:
        (b / name).symlink_to(a / (TRAIN_IMAGES if name == TRAIN_LABELS else name))
    with pytest.raises(ds.DatasetError, match=r"magic number 2051 \(an image file\), expected 2049"):
        ds.load_mnist(data_dir=b)


# --- downloads -----------------------------------------------------------------------------------

def serve(root: Path, subdir: str, raw: dict[str, bytes]) -> None:
    folder = root / subdir
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in raw.items():
        (folder / name).write_bytes(gzip.compress(data, mtime=0))


@pytest.mark.parametrize("first", ["404", "refused"])
def test_mirror_fallback(server, monkeypatch, isolated, first):
    root, base, requests = server
    arrays = tiny()
    raw = raw_files(arrays)
    expect_checksums(monkeypatch, raw)
    serve(root, "good", raw)
    bad = f"{base}/missing/" if first == "404" else f"http://127.0.0.1:{closed_port()}/mnist"
    monkeypatch.setitem(ds.MIRRORS, "mnist", (bad, f"{base}/good"))

    (x, t), (xt, tt) = ds.load_mnist(normalize=False)
    np.testing.assert_array_equal(x, arrays[TRAIN_IMAGES])
    np.testing.assert_array_equal(tt, arrays[TEST_LABELS])
    target = isolated / "bpfast" / "mnist"
    assert sorted(p.name for p in target.iterdir()) == sorted(NAMES)  # no temporary files left
    # the mirror that answered is asked first for the remaining files
    expected = ["/good/" + NAMES[0], *("/good/" + name for name in NAMES[1:])]
    if first == "404":
        expected.insert(0, "/missing/" + NAMES[0])
    assert requests == expected
    ds.load_mnist()
    assert len(requests) == len(expected)  # loaded from the cache, not downloaded again


def test_mirrors_from_the_environment_and_the_argument(server, monkeypatch):
    root, base, requests = server
    raw = raw_files(tiny())
    expect_checksums(monkeypatch, raw)
    serve(root, "env", raw)
    serve(root, "arg", raw)
    monkeypatch.setenv("BPFAST_MNIST_MIRRORS", f"{base}/nothing-here, {base}/env")
    ds.load_mnist(mirrors=[f"{base}/arg/"])
    assert requests and all(path.startswith("/arg/") for path in requests)


def test_mirrors_from_the_environment(server, monkeypatch):
    root, base, requests = server
    raw = raw_files(tiny())
    expect_checksums(monkeypatch, raw, dataset="fashion-mnist")
    serve(root, "env", raw)
    monkeypatch.setenv("BPFAST_FASHION_MNIST_MIRRORS", f"{base}/nothing-here {base}/env")
    ds.load_mnist(dataset="fashion-mnist")
    assert requests[:2] == ["/nothing-here/" + NAMES[0], "/env/" + NAMES[0]]


def test_only_the_missing_files_are_downloaded(server, monkeypatch, isolated):
    root, base, requests = server
    raw = raw_files(tiny())
    expect_checksums(monkeypatch, raw)
    serve(root, "m", raw)
    write_files(isolated / "bpfast" / "mnist", {name: raw[name] for name in (TRAIN_IMAGES, TEST_LABELS)})
    ds.load_mnist(mirrors=[f"{base}/m"])
    assert requests == ["/m/" + TRAIN_LABELS, "/m/" + TEST_IMAGES]


def test_a_recompressed_file_passes_on_its_decompressed_md5(server, monkeypatch):
    root, base, _ = server
    raw = raw_files(tiny())
    expect_checksums(monkeypatch, raw)
    folder = root / "recompressed"
    folder.mkdir()
    for name, data in raw.items():
        recompressed = gzip.compress(data, compresslevel=1, mtime=12345)
        assert md5(recompressed) not in ds._CHECKSUMS["mnist"][name].gzip_md5
        (folder / name).write_bytes(recompressed)
    ds.load_mnist(mirrors=[f"{base}/recompressed"])


@pytest.mark.parametrize("served", ["other data", "truncated", "garbage"])
def test_a_download_with_the_wrong_checksum_is_refused(server, monkeypatch, isolated, served):
    root, base, _ = server
    raw = raw_files(tiny())
    expect_checksums(monkeypatch, raw)
    if served == "other data":
        serve(root, "m", raw_files(tiny(seed=9)))
    else:
        serve(root, "m", raw)
        path = root / "m" / TRAIN_IMAGES
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2] if served == "truncated" else b"<html>not found</html>")
    with pytest.raises(ds.DatasetError) as info:
        ds.load_mnist(mirrors=[f"{base}/m"])
    message = str(info.value)
    assert f"{base}/m/{TRAIN_IMAGES}: " in message
    assert ("checksum mismatch" if served != "truncated" else "not a valid gzip file") in message
    assert list((isolated / "bpfast" / "mnist").iterdir()) == []  # nothing kept, not even a temp file


def test_download_progress_goes_to_tqdm_when_installed(server, monkeypatch):
    root, base, _ = server
    raw = raw_files(tiny())
    expect_checksums(monkeypatch, raw)
    serve(root, "m", raw)
    bars: list[dict] = []

    class FakeTqdm:
        def __init__(self, **kwargs):
            self.record = {**kwargs, "n": 0}
            bars.append(self.record)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            self.record["n"] += n

    fake = types.ModuleType("tqdm.auto")
    fake.tqdm = FakeTqdm
    monkeypatch.setitem(sys.modules, "tqdm", types.ModuleType("tqdm"))
    monkeypatch.setitem(sys.modules, "tqdm.auto", fake)
    ds.load_mnist(mirrors=[f"{base}/m"])
    assert [bar["desc"] for bar in bars] == list(NAMES)
    assert all(bar["n"] == bar["total"] == (root / "m" / bar["desc"]).stat().st_size for bar in bars)


def test_downloads_are_quiet_without_tqdm(server, monkeypatch, capsys):
    root, base, _ = server
    raw = raw_files(tiny())
    expect_checksums(monkeypatch, raw)
    serve(root, "m", raw)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # import fails as if not installed
    ds.load_mnist(mirrors=[f"{base}/m"])
    assert capsys.readouterr() == ("", "")


# --- the parsed cache ----------------------------------------------------------------------------

def _no_parsing(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("parsed again")
    monkeypatch.setattr(ds, "_parse_idx", refuse)


def test_second_load_reads_the_parsed_cache(tmp_path, monkeypatch, isolated):
    arrays = write_tiny(tmp_path / "data")
    first = ds.load_mnist(data_dir=tmp_path / "data")
    assert len(parsed_files(isolated)) == 4
    with monkeypatch.context() as patch:
        _no_parsing(patch)
        second = ds.load_mnist(data_dir=tmp_path / "data")
    for a, b in zip((*first[0], *first[1]), (*second[0], *second[1])):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(second[0][1], arrays[TRAIN_LABELS])


def test_nothing_is_written_beside_the_data(tmp_path, isolated):
    folder = tmp_path / "read-only"
    write_tiny(folder)
    before = sorted(folder.iterdir())
    folder.chmod(0o555)
    try:
        ds.load_mnist(data_dir=folder)
        ds.load_mnist(data_dir=folder)
    finally:
        folder.chmod(0o755)
    assert sorted(folder.iterdir()) == before
    assert len(parsed_files(isolated)) == 4


def test_a_replaced_file_is_parsed_again_even_with_the_same_size_and_mtime(tmp_path):
    folder = tmp_path / "data"
    write_tiny(folder, seed=1)
    path = folder / TRAIN_IMAGES

    def stored(pixels):  # gzip without compression: the size depends only on the image count
        return gzip.compress(idx_images(pixels), compresslevel=0, mtime=0)

    path.write_bytes(stored(tiny(seed=1)[TRAIN_IMAGES]))
    ds.load_mnist(data_dir=folder)
    st = path.stat()
    newer = tiny(seed=2)
    replacement = folder / "replacement.tmp"
    replacement.write_bytes(stored(newer[TRAIN_IMAGES]))
    assert replacement.stat().st_size == st.st_size
    os.utime(replacement, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(replacement, path)
    (x, _), _ = ds.load_mnist(normalize=False, data_dir=folder)
    np.testing.assert_array_equal(x, newer[TRAIN_IMAGES])


def test_a_file_rewritten_in_place_is_parsed_again(tmp_path):
    folder = tmp_path / "data"
    write_tiny(folder, seed=1)
    ds.load_mnist(data_dir=folder)
    newer = tiny(seed=2)
    (folder / TEST_LABELS).write_bytes(gzip.compress(idx_labels(newer[TEST_LABELS])))
    st = (folder / TEST_LABELS).stat()
    os.utime(folder / TEST_LABELS, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    _, (_, t) = ds.load_mnist(data_dir=folder)
    np.testing.assert_array_equal(t, newer[TEST_LABELS])


def test_a_touched_file_is_hashed_not_parsed(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    arrays = write_tiny(folder)
    ds.load_mnist(data_dir=folder)
    for name in NAMES:
        st = (folder / name).stat()
        os.utime(folder / name, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    _no_parsing(monkeypatch)
    md5 = ds._md5
    hashed: list[int] = []

    def counted(data):
        hashed.append(len(data))
        return md5(data)

    monkeypatch.setattr(ds, "_md5", counted)
    (x, _), _ = ds.load_mnist(normalize=False, data_dir=folder)
    np.testing.assert_array_equal(x, arrays[TRAIN_IMAGES])
    # Each touched file's bytes are hashed once (its md5 decides whether the cache still holds it).
    assert sorted(hashed) == sorted((folder / name).stat().st_size for name in NAMES)
    hashed.clear()
    ds.load_mnist(data_dir=folder)
    assert hashed == []  # the new times were recorded: the next load only stats


@pytest.mark.parametrize("damage", ["garbage", "truncated", "deleted", "other shape"])
def test_a_damaged_parsed_cache_is_rebuilt(tmp_path, isolated, damage):
    folder = tmp_path / "data"
    arrays = write_tiny(folder)
    ds.load_mnist(data_dir=folder)
    (npy,) = [p for p in parsed_files(isolated) if p.name.startswith("train-images")]
    if damage == "garbage":
        npy.write_bytes(b"\x93NUMPY garbage" * 100)
    elif damage == "truncated":
        npy.write_bytes(npy.read_bytes()[:-10])
    elif damage == "deleted":
        npy.unlink()
    else:
        st = npy.stat()  # same bytes, same size and mtime, but not the shape the cache recorded
        np.save(npy, arrays[TRAIN_IMAGES].reshape(12, 392))
        assert npy.stat().st_size == st.st_size
        os.utime(npy, ns=(st.st_atime_ns, st.st_mtime_ns))
    (x, _), _ = ds.load_mnist(normalize=False, data_dir=folder)
    np.testing.assert_array_equal(x, arrays[TRAIN_IMAGES])


def test_an_unwritable_cache_only_costs_time(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    arrays = write_tiny(tmp_path / "data")
    for _ in range(2):
        (x, _), _ = ds.load_mnist(normalize=False, data_dir=tmp_path / "data")
        np.testing.assert_array_equal(x, arrays[TRAIN_IMAGES])


# --- the user's cache folder ---------------------------------------------------------------------

def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "platform", "linux")
    assert ds.default_cache_dir() == tmp_path / "xdg-cache" / "bpfast"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/is/ignored")
    assert ds.default_cache_dir() == tmp_path / "home" / ".cache" / "bpfast"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert ds.default_cache_dir() == tmp_path / "home" / ".cache" / "bpfast"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert ds.default_cache_dir() == tmp_path / "home" / "Library" / "Caches" / "bpfast"
    monkeypatch.setattr(sys, "platform", "win32")
    assert ds.default_cache_dir() == tmp_path / "localappdata" / "bpfast" / "Cache"


# --- the real data beside the checkout -----------------------------------------------------------

MNIST_MD5 = {  # of the decompressed files, from shared/data/README.md
    TRAIN_IMAGES: "6bbc9ace898e44ae57da46a324031adb",
    TRAIN_LABELS: "a25bea736e30d166cdddb491f175f624",
    TEST_IMAGES: "2646ac647ad5339dbf082846283269ea",
    TEST_LABELS: "27ae3e4e09519cfbb04c329615203637",
}
FASHION_MD5 = {
    TRAIN_IMAGES: "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    TRAIN_LABELS: "9018921c3c673c538a1fc5bad174d6f9",
    TEST_IMAGES: "8181f5470baa50b63fa0f6fddb340f0a",
    TEST_LABELS: "15d484375f8d13e6eb1aabb0c3f46965",
}
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _shared(dataset: str) -> Path:
    folder = SHARED_DATA / dataset
    if not all((folder / name).is_file() for name in NAMES):
        pytest.skip(f"the {dataset} files are not in {folder} (the shared data beside the checkout)")
    return folder


def _loaded_md5s(arrays) -> dict[str, str]:
    """md5 of the IDX bytes the loaded uint8 arrays stand for."""
    (x, t), (xt, tt) = arrays
    return {TRAIN_IMAGES: md5(idx_images(x)), TRAIN_LABELS: md5(idx_labels(t)),
            TEST_IMAGES: md5(idx_images(xt)), TEST_LABELS: md5(idx_labels(tt))}


def test_full_mnist():
    folder = _shared("mnist")
    raw = ds.load_mnist(normalize=False, data_dir=folder, download=False)
    assert _loaded_md5s(raw) == MNIST_MD5  # the decompressed files, byte for byte
    (x, t), (xt, tt) = ds.load_mnist(data_dir=folder, download=False)  # from the parsed cache
    assert x.shape == (60000, 784) and xt.shape == (10000, 784) and x.dtype == np.float32
    assert t.shape == (60000,) and tt.shape == (10000,) and t.dtype == np.uint8
    assert np.bincount(t).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(tt).tolist() == MNIST_TEST_COUNTS
    assert x.min() == 0.0 and x.max() == 1.0
    assert np.array_equal(x, raw[0][0].astype(np.float32) / np.float32(255.0))  # the book's values


def test_full_mnist_from_the_parent_folder_and_as_the_wrong_dataset():
    folder = _shared("mnist")
    _, (_, tt) = ds.load_mnist(data_dir=folder.parent, download=False)
    assert np.bincount(tt).tolist() == MNIST_TEST_COUNTS
    with pytest.raises(ds.DatasetError, match="holds MNIST's .* not Fashion-MNIST's"):
        ds.load_mnist(dataset="fashion-mnist", data_dir=folder, download=False)


def test_full_fashion_mnist():
    folder = _shared("fashion-mnist")
    raw = ds.load_mnist(normalize=False, dataset="fashion-mnist", data_dir=folder, download=False)
    assert _loaded_md5s(raw) == FASHION_MD5
    (x, t), (xt, tt) = ds.load_mnist(flatten=False, one_hot_label=True, dataset="fashion-mnist",
                                     data_dir=folder, download=False)
    assert x.shape == (60000, 1, 28, 28) and xt.shape == (10000, 1, 28, 28)
    assert t.shape == (60000, 10) and t.dtype == np.float64 and tt.sum() == 10000
