"""The one lazy TIFF reader: the pixels tifffile reads, by plane and by region, for every layout
the engine meets; one page in memory per plane; pickles to its path; damage named on one line."""
import pickle
import threading

import numpy as np
import pytest
import tifffile

from btunet import BTUnetError
from btunet.io.imageio import UnreadableImage, read_lazy
from btunet.io.tiff_reader import LazyTiff

RNG = np.random.default_rng(0)
STACK = RNG.integers(0, 2**16, (3, 2, 40, 52), dtype=np.uint16)


def write(path, kind):
    """One file of ``kind``; returns its path."""
    if kind == "plain":
        tifffile.imwrite(path, STACK, photometric="minisblack")
    elif kind == "compressed":
        tifffile.imwrite(path, STACK, compression="zlib", photometric="minisblack")
    elif kind == "tiled":
        tifffile.imwrite(path, STACK, tile=(16, 16), compression="zlib", photometric="minisblack")
    elif kind == "imagej":
        tifffile.imwrite(path, STACK[None], imagej=True, metadata={"axes": "TZCYX"})
    elif kind == "ome":
        path = path.with_suffix(".ome.tif")
        tifffile.imwrite(path, STACK, metadata={"axes": "ZCYX"}, compression="zlib")
    elif kind == "bool":
        tifffile.imwrite(path, STACK > 2**15)
    elif kind == "rgb":
        tifffile.imwrite(path, RNG.integers(0, 255, (3, 40, 52, 3), dtype=np.uint8), photometric="rgb")
    elif kind == "big-endian":
        tifffile.imwrite(path, STACK, byteorder=">", photometric="minisblack")
    return path


KINDS = ["plain", "compressed", "tiled", "imagej", "ome", "bool", "rgb", "big-endian"]


def expected(path):
    array = tifffile.imread(path)
    return array.view(np.uint8) if array.dtype == bool else array


@pytest.mark.parametrize("kind", KINDS)
def test_the_pixels_are_tifffiles_by_plane_and_by_region(kind, tmp_path):
    path = write(tmp_path / f"{kind}.tif", kind)
    truth = expected(path)
    with LazyTiff(path) as tiff:
        assert tiff.shape == truth.shape and tiff.ndim == truth.ndim and tiff.dtype == truth.dtype
        assert tiff.paged
        rgb = kind == "rgb"
        for index in np.ndindex(*truth.shape[:-3 if rgb else -2]):
            plane = tiff[index]
            assert plane.dtype == truth.dtype and np.array_equal(plane, truth[index])
        region = (slice(0, 2),) * (truth.ndim - (3 if rgb else 2)) + (slice(5, 33), slice(7, 50))
        assert np.array_equal(tiff[region], truth[region]) and tiff[region].dtype == truth.dtype
        assert np.array_equal(tiff[-1, ..., 3:9], truth[-1, ..., 3:9])
        assert np.array_equal(tiff[(slice(None),) * (truth.ndim - 1) + ([0, 2],)], truth[..., [0, 2]])
        assert np.array_equal(np.asarray(tiff), truth) and np.asarray(tiff).dtype == truth.dtype


def test_a_plane_decodes_one_page_and_never_the_stack(tmp_path):
    path = write(tmp_path / "s.tif", "compressed")
    tiff = LazyTiff(path)
    tiff.read = lambda: pytest.fail("a plane read must not read the whole stack")
    tiff._view = lambda: pytest.fail("a whole plane is read from its page")
    assert np.array_equal(tiff[2, 1], STACK[2, 1])
    assert np.array_equal(tiff[1], STACK[1])  # the channels of one plane: two pages
    assert np.array_equal(tiff[:, 0], STACK[:, 0])
    tiff.close()
    assert np.array_equal(tiff[0, 0], STACK[0, 0])  # reopened after close


def test_an_uncompressed_file_is_memory_mapped_for_regions(tmp_path):
    path = write(tmp_path / "s.tif", "plain")
    with LazyTiff(path) as tiff:
        assert np.array_equal(tiff[0:1, 1, 10:20, 5:30], STACK[0:1, 1, 10:20, 5:30])
        assert isinstance(tiff._region, np.memmap)
    with LazyTiff(write(tmp_path / "c.tif", "compressed")) as tiff:
        assert np.array_equal(tiff[0:1, 1, 10:20, 5:30], STACK[0:1, 1, 10:20, 5:30])
        assert not isinstance(tiff._region, np.memmap)


def test_pickles_to_its_path_only(tmp_path):
    path = write(tmp_path / "s.tif", "tiled")
    tiff = LazyTiff(path)
    tiff[0, 0, :5, :5]  # opened views are not pickled
    state = tiff.__getstate__()
    assert state == {"path": str(path.resolve())}
    assert len(pickle.dumps(tiff)) < 1000
    copy = pickle.loads(pickle.dumps(tiff))
    assert copy.shape == tiff.shape and copy.dtype == tiff.dtype
    assert np.array_equal(copy[1, 1, 3:30, 4:40], STACK[1, 1, 3:30, 4:40])
    tiff.close()
    copy.close()


def test_threads_share_one_reader(tmp_path):
    path = write(tmp_path / "s.tif", "compressed")
    tiff, wrong = LazyTiff(path), []

    def read(k: int) -> None:
        for _ in range(5):
            index = (k % 3, k % 2)
            if not np.array_equal(tiff[index], STACK[index]) or not np.array_equal(
                    tiff[index + (slice(3, 19), slice(0, 40))], STACK[index][3:19, 0:40]):
                wrong.append(index)

    threads = [threading.Thread(target=read, args=(k,)) for k in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tiff.close()
    assert not wrong


@pytest.mark.parametrize("content", [b"", b"not a tiff at all", b"II*\0broken"])
def test_a_foreign_or_corrupt_file_is_one_line_naming_it(content, tmp_path):
    path = tmp_path / "bad.tif"
    path.write_bytes(content)
    with pytest.raises(UnreadableImage, match="cannot read image .*bad.tif") as caught:
        LazyTiff(path)
    assert isinstance(caught.value, BTUnetError) and "\n" not in str(caught.value)


def test_a_truncated_compressed_stack_fails_when_its_page_is_read(tmp_path):
    path = write(tmp_path / "s.tif", "compressed")
    whole = path.read_bytes()
    with LazyTiff(path) as tiff:
        offset = int(tiff._file().series[0].pages[5].dataoffsets[0])
    path.write_bytes(whole[:offset + 20])  # the last page is cut off, the header is whole
    with LazyTiff(path) as tiff:
        assert np.array_equal(tiff[0, 0], STACK[0, 0])
        with pytest.raises(UnreadableImage, match="cannot read image .*s.tif") as caught:
            tiff[2, 1]
        assert "\n" not in str(caught.value)


def test_out_of_range_planes_are_index_errors(tmp_path):
    with LazyTiff(write(tmp_path / "s.tif", "plain")) as tiff, pytest.raises(IndexError):
        tiff[3, 0]


def test_read_lazy_streams_stacks_and_single_images_alike(tmp_path):
    stack = read_lazy(write(tmp_path / "s.tif", "compressed"))
    assert isinstance(stack, LazyTiff) and stack.paged
    stack.close()
    tifffile.imwrite(tmp_path / "one.tif", STACK[0, 0])
    single = read_lazy(tmp_path / "one.tif")
    assert np.array_equal(single[...], STACK[0, 0])
