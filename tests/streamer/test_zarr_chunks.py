"""``streamer.zarr_chunks``: direct chunk decoding equals the zarr package, else no reader."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.zarr_chunks import zarr_v3_row_reader, zstd_content_size

zarr = pytest.importorskip("zarr")


@pytest.mark.parametrize("compressors", ["auto", None])
def test_rows_equal_the_zarr_package_across_chunk_borders(tmp_path, compressors):
    data = np.random.default_rng(0).integers(0, 4000, size=(11, 1, 8, 6), dtype=np.uint16)
    z = zarr.create_array(
        tmp_path, shape=data.shape, chunks=(4, 1, 8, 6), dtype="u2", compressors=compressors
    )
    z[:] = data
    read = zarr_v3_row_reader(tmp_path, shape=data.shape, dtype=np.dtype("u2"))
    assert read is not None
    for a, b in [(0, 11), (3, 9), (4, 8), (10, 11)]:
        np.testing.assert_array_equal(read(a, b), data[a:b])
    assert read(0, 2).dtype == np.uint16


def test_safe_cast_to_the_expected_dtype_and_missing_chunks_are_the_fill_value(tmp_path):
    z = zarr.create_array(tmp_path, shape=(6, 3), chunks=(2, 3), dtype="u1", fill_value=7)
    z[:2] = 1
    read = zarr_v3_row_reader(tmp_path, shape=(6, 3), dtype=np.dtype("f4"))
    np.testing.assert_array_equal(read(0, 6)[:, 0], [1, 1, 7, 7, 7, 7])
    assert read(0, 1).dtype == np.float32


def test_other_layouts_give_no_reader(tmp_path):
    zarr.create_array(tmp_path / "cols", shape=(4, 6), chunks=(2, 3), dtype="u2")
    zarr.create_array(tmp_path / "f8", shape=(4, 6), chunks=(2, 6), dtype="f8")
    assert zarr_v3_row_reader(tmp_path / "cols", shape=(4, 6), dtype=np.dtype("u2")) is None
    assert zarr_v3_row_reader(tmp_path / "f8", shape=(4, 6), dtype=np.dtype("f4")) is None  # unsafe
    assert zarr_v3_row_reader(tmp_path / "f8", shape=(5, 6), dtype=np.dtype("f8")) is None
    assert zarr_v3_row_reader(tmp_path / "absent", shape=(4, 6), dtype=np.dtype("u2")) is None


def test_whole_chunks_decode_into_the_callers_buffer(tmp_path):
    data = np.random.default_rng(1).integers(0, 4000, size=(10, 8, 6), dtype=np.uint16)
    zarr.create_array(tmp_path, shape=data.shape, chunks=(4, 8, 6), dtype="u2")[:] = data
    read = zarr_v3_row_reader(tmp_path, shape=data.shape, dtype=np.dtype("u2"))
    out = np.full((9, 8, 6), 7, np.uint16)
    assert read(0, 9, out[:9]).base is out  # chunks 0-1 in place, then 1 row of chunk 2
    np.testing.assert_array_equal(out, data[:9])
    strided = np.zeros((8, 8, 12), np.uint16)[:, :, ::2]  # not contiguous: through scratch
    np.testing.assert_array_equal(read(0, 8, strided), data[:8])


def test_a_chunk_of_the_wrong_size_is_an_error_not_a_silent_short_read(tmp_path):
    from numcodecs import Zstd

    zarr.create_array(tmp_path, shape=(8, 6), chunks=(4, 6), dtype="u2")[:] = 1
    (tmp_path / "c" / "1" / "0").write_bytes(Zstd().encode(bytes(10)))  # declares 10 bytes
    read = zarr_v3_row_reader(tmp_path, shape=(8, 6), dtype=np.dtype("u2"))
    with pytest.raises(OSError, match="holds 10 bytes, not 48"):
        read(0, 8, np.empty((8, 6), np.uint16))


def test_zstd_content_size_reads_every_header_width():
    from numcodecs import Zstd

    for n in (0, 5, 300, 70000, 1 << 20):
        assert zstd_content_size(Zstd().encode(bytes(n))) == n


class _Source:
    def __init__(self, path):
        self.mimetype, self.parameters = "application/x-zarr", {}
        self.assets = [type("Asset", (), {"data_uri": f"file://localhost{path}", "num": None})]


class _Node:
    """Just what ArrayRows uses of a tiled array node."""

    def __init__(self, path, data):
        from tiled.structures.array import ArrayStructure

        self._structure = ArrayStructure.from_array(data)
        self._sources = [_Source(path)]

    def structure(self):
        return self._structure

    def data_sources(self):
        return self._sources


def test_array_rows_reuse_their_block_buffer_and_rows_stay_copies(tmp_path):
    from streamer.archived_arrays import ArrayRows

    data = np.arange(12 * 4 * 4, dtype=np.uint16).reshape(12, 4, 4)
    zarr.create_array(tmp_path, shape=data.shape, chunks=(4, 4, 4), dtype="u2")[:] = data
    rows = ArrayRows(_Node(tmp_path, data), block_bytes=8 * 4 * 4 * 2)  # 8-row blocks
    assert rows.direct
    first = [rows.rows(i, i + 1) for i in range(12)]  # two blocks through one buffer
    buffer = rows._buffer
    rows.close()
    again = ArrayRows(_Node(tmp_path, data), block_bytes=8 * 4 * 4 * 2)
    np.testing.assert_array_equal(again.rows(5, 7), data[5:7])
    assert again._buffer is buffer  # the next reader took the same memory
    np.testing.assert_array_equal(np.concatenate(first), data)  # earlier rows untouched
    again.close()
