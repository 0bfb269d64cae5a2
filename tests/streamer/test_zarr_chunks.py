"""``streamer.zarr_chunks``: direct chunk decoding equals the zarr package, else no reader."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.zarr_chunks import zarr_v3_row_reader

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
