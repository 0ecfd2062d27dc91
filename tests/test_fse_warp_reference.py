"""The FSE reference's mis-scaled g(v), checked against hand-computed values (docs/models/fse.md)."""
import pytest
import torch

from posekit.ops.tps import reference_cell_warp

IDENTITY = torch.tensor([[[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])


def _cell(g, i, j):
    return g[0, i * 42 + j]


def test_reference_identity_warp_is_mis_scaled_by_48_over_47():
    g = reference_cell_warp(IDENTITY)
    # padded index p = i + 3 is sampled at p * 48 / 47, between two index-map cells
    assert _cell(g, 0, 0).tolist() == pytest.approx([3 * 48 / 47 - 3] * 2, abs=1e-9)  # 0.0638
    assert _cell(g, 20, 20).tolist() == pytest.approx([23 * 48 / 47 - 3] * 2, abs=1e-9)  # 20.489
    assert _cell(g, 40, 40).tolist() == pytest.approx([40.915] * 2, abs=1e-3)


def test_reference_last_row_blends_with_the_zero_pad():
    g = reference_cell_warp(IDENTITY)
    # row 41 sits at padded 44, sampled at q = 44 * 48 / 47 = 44.936: 6.4 % index 44, 93.6 % zero pad
    keep = 1 - (44 * 48 / 47 - 44)
    assert _cell(g, 41, 20).tolist() == pytest.approx([41 * keep, (23 * 48 / 47 - 3) * keep], abs=1e-9)  # (2.62, 1.31)
    assert _cell(g, 41, 41).tolist() == pytest.approx([41 * keep ** 2] * 2, abs=1e-9)  # both axes blend: 0.167


def test_reference_samples_outside_the_padded_grid_read_exactly_zero():
    far = torch.tensor([[[5.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])  # t_x = 5: every source is right of the grid
    assert torch.count_nonzero(reference_cell_warp(far)) == 0


def test_reference_translation_moves_columns_and_keeps_rows():
    # t_x = 2 / 48 shifts the source column index by exactly +1
    shift = torch.tensor([[[2 / 48, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    g, base = reference_cell_warp(shift), reference_cell_warp(IDENTITY)
    want = [_cell(base, 20, 20)[0].item(), _cell(base, 20, 20)[1].item() + 1]
    assert _cell(g, 20, 20).tolist() == pytest.approx(want, abs=1e-6)
