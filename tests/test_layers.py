"""embedzoo.layers, the transformers' shared pieces, against plain computations on known values.

Sequences and tables are built so each row says where it came from (token k, or patch (f, t)),
so the expected output is written down index by index, independently of the reshapes under test.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from embedzoo.errors import ConfigError  # noqa: E402
from embedzoo.layers import crop_flat_embedding, crop_time_embedding, patch_columns, time_window  # noqa: E402

BATCH, DIM, TOKENS, BANDS, COLS = 2, 3, 2, 4, 5


def code(b: int, f: int, t: int, d: int) -> float:
    """The value patch (f, t), channel d of batch row b carries: digits say where it came from."""
    return 1000.0 * b + 100.0 * t + 10.0 * f + d


def token_value(b: int, k: int, d: int) -> float:
    return -(1000.0 * b + 100.0 * k + d) - 1.0


def sequence(layout: str, tokens: int = TOKENS, batch: int = BATCH, bands: int = BANDS, cols: int = COLS) -> torch.Tensor:
    """(batch, tokens + bands*cols, DIM) with patch (f, t) at row tokens + f*cols + t ("ft") or
    tokens + t*bands + f ("tf"), filled element by element."""
    out = torch.empty(batch, tokens + bands * cols, DIM, dtype=torch.float64)
    for b in range(batch):
        for d in range(DIM):
            for k in range(tokens):
                out[b, k, d] = token_value(b, k, d)
            for f in range(bands):
                for t in range(cols):
                    row = tokens + (f * cols + t if layout == "ft" else t * bands + f)
                    out[b, row, d] = code(b, f, t, d)
    return out


@pytest.mark.parametrize("layout", ["ft", "tf"])
def test_patch_columns_are_tokens_then_the_mean_of_each_column(layout):
    out = patch_columns(sequence(layout), (BANDS, COLS), tokens=TOKENS, layout=layout)
    assert out.shape == (BATCH, TOKENS + COLS, DIM)
    mean_f = sum(range(BANDS)) / BANDS
    for b in range(BATCH):
        for d in range(DIM):
            for k in range(TOKENS):
                assert out[b, k, d] == token_value(b, k, d)
            for t in range(COLS):
                assert out[b, TOKENS + t, d].item() == pytest.approx(1000.0 * b + 100.0 * t + 10.0 * mean_f + d, abs=1e-9)


def test_patch_columns_without_tokens_and_of_noise():
    """No tokens: only the columns; on noise, column t is the mean of the rows f*T + t."""
    assert patch_columns(sequence("ft", tokens=0), (BANDS, COLS)).shape == (BATCH, COLS, DIM)
    noise = torch.randn(BATCH, 1 + BANDS * COLS, DIM, generator=torch.Generator().manual_seed(0))
    out = patch_columns(noise, (BANDS, COLS), tokens=1)
    assert torch.equal(out[:, 0], noise[:, 0])
    for t in range(COLS):
        rows = [1 + f * COLS + t for f in range(BANDS)]
        assert torch.allclose(out[:, 1 + t], noise[:, rows].mean(dim=1), atol=1e-6)


def test_patch_columns_refuse_a_grid_that_does_not_fit():
    with pytest.raises(ValueError, match="2 tokens"):
        patch_columns(sequence("ft"), (BANDS, COLS + 1), tokens=TOKENS)
    with pytest.raises(ValueError, match="layout"):
        patch_columns(sequence("ft"), (BANDS, COLS), tokens=TOKENS, layout="tt")


def test_time_window_first_or_middle_positions():
    assert time_window(99, 13) == slice(0, 13)
    assert time_window(24, 13, centre=True) == slice(6, 19)  # 24 // 2 - 13 // 2: AST's cut
    assert time_window(24, 12, centre=True) == slice(6, 18)
    assert time_window(7, 7, centre=True) == slice(0, 7)
    with pytest.raises(ConfigError, match="passt-x: the input has 100 patch columns; the positional embedding has 99"):
        time_window(99, 100, model_id="passt-x")
    with pytest.raises(ConfigError):
        time_window(99, 0)


@pytest.mark.parametrize("centre", [False, True])
def test_factorised_time_table_is_cut_to_the_columns(centre):
    """PaSST's (1, D, 1, T) table: positions [start, start + columns) along the last axis, as a view."""
    positions, columns = 10, 4
    table = torch.arange(positions, dtype=torch.float64).repeat(DIM, 1).reshape(1, DIM, 1, positions)
    cut = crop_time_embedding(table, columns, centre=centre)
    start = positions // 2 - columns // 2 if centre else 0
    assert cut.shape == (1, DIM, 1, columns)
    assert cut[0, :, 0].tolist() == [[float(start + j) for j in range(columns)]] * DIM
    assert cut.data_ptr() == table[..., start:].data_ptr()  # a view: no copy of the table
    # another time axis (a (1, T, D) table)
    rows = torch.arange(positions * DIM, dtype=torch.float64).reshape(1, positions, DIM)
    assert torch.equal(crop_time_embedding(rows, columns, dim=1, centre=centre), rows[:, start : start + columns])
    with pytest.raises(ConfigError, match="11 patch columns"):
        crop_time_embedding(table, positions + 1)


@pytest.mark.parametrize("layout", ["ft", "tf"])
@pytest.mark.parametrize("centre", [False, True])
def test_flat_table_keeps_tokens_and_cuts_each_frequency_row(layout, centre):
    """AST's (1, tokens + F*T, D) table: the tokens, then patch (f, t) for t in the window, in the
    table's own layout, element by element."""
    positions, columns = 7, 3
    table = sequence(layout, batch=1, cols=positions)
    cut = crop_flat_embedding(table, (BANDS, positions), columns, tokens=TOKENS, layout=layout, centre=centre)
    start = positions // 2 - columns // 2 if centre else 0
    assert cut.shape == (1, TOKENS + BANDS * columns, DIM)
    for d in range(DIM):
        for k in range(TOKENS):
            assert cut[0, k, d] == token_value(0, k, d)
        for f in range(BANDS):
            for j in range(columns):
                row = TOKENS + (f * columns + j if layout == "ft" else j * BANDS + f)
                assert cut[0, row, d] == code(0, f, start + j, d)


def test_flat_and_factorised_tables_agree():
    """A factorised table (frequency + time) written out flat, frequency-major, and cut: the same as
    cutting the time table first -- the two layouts a ViT on spectrograms uses say one thing."""
    generator = torch.Generator().manual_seed(1)
    positions, columns = 9, 4
    freq = torch.randn(1, DIM, BANDS, 1, generator=generator)
    time = torch.randn(1, DIM, 1, positions, generator=generator)
    tokens = torch.randn(1, TOKENS, DIM, generator=generator)
    flat = torch.cat((tokens, (freq + time).flatten(2).transpose(1, 2)), dim=1)
    expected = torch.cat((tokens, (freq + crop_time_embedding(time, columns)).flatten(2).transpose(1, 2)), dim=1)
    assert torch.equal(crop_flat_embedding(flat, (BANDS, positions), columns, tokens=TOKENS), expected)
    with pytest.raises(ValueError, match="grid"):
        crop_flat_embedding(flat, (BANDS, positions + 1), columns, tokens=TOKENS)


def test_the_plugin_surface_exposes_the_module():
    from embedzoo.plugin import layers

    assert layers.patch_columns is patch_columns and layers.crop_flat_embedding is crop_flat_embedding
