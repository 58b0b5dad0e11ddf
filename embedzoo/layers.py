"""Shared pieces of the transformers on spectrograms (timm's `timm.layers`, for embedzoo's families).

A ViT on a spectrogram cuts it into a grid of F frequency x T time patches and flattens the grid
into one sequence, after its special tokens (cls, dist, ...). embedzoo reads such a sequence as a
layer with tokens and one frame per patch column (`patch_columns`): the tokens as they are, then
for each time column the mean over its F frequency patches -- so a layer's frames advance with
time, like any other family's. The positional embedding is made for the longest input; a shorter
one uses the table's first columns (PaSST, Dasheng, CED) or its middle ones (AST's cut of an
ImageNet table): `crop_time_embedding` for a factorised table (separate time and frequency
tables, PaSST), `crop_flat_embedding` for a flat one (tokens + F x T rows, AST).

`layout` names the order the grid was flattened in: "ft" frequency-major (patch (f, t) at row
f * T + t, what `conv(...).flatten(2)` of a (batch, 1, F, T) input gives: PaSST, AST, Dasheng, CED)
or "tf" time-major (row t * F + f, from a (batch, 1, T, F) input: BEATs).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from embedzoo.errors import ConfigError

__all__ = ["Layout", "patch_columns", "time_window", "crop_time_embedding", "crop_flat_embedding"]

Layout = Literal["ft", "tf"]


def _check_layout(layout: str) -> None:
    if layout not in ("ft", "tf"):
        raise ValueError(f"layout must be 'ft' (frequency-major) or 'tf' (time-major), not {layout!r}")


def patch_columns(sequence: Tensor, grid: tuple[int, int], tokens: int = 0, layout: Layout = "ft") -> Tensor:
    """(batch, tokens + F*T, D) -> (batch, tokens + T, D): the tokens unchanged, then one frame per
    patch column, the mean over its F frequency patches. `grid` is (F, T) of this input."""
    _check_layout(layout)
    batch, rows, dim = sequence.shape
    bands, cols = grid
    if rows != tokens + bands * cols:
        raise ValueError(f"a sequence of {rows} rows is not {tokens} tokens + a {bands} x {cols} patch grid")
    patches = sequence[:, tokens:]
    if layout == "ft":
        frames = patches.reshape(batch, bands, cols, dim).mean(dim=1)
    else:
        frames = patches.reshape(batch, cols, bands, dim).mean(dim=2)
    return torch.cat((sequence[:, :tokens], frames), dim=1)


def time_window(positions: int, columns: int, centre: bool = False, model_id: str = "") -> slice:
    """The time positions an input of `columns` patch columns uses out of a table's `positions`:
    the first ones, or with `centre` the middle ones, from positions // 2 - columns // 2 (AST's
    cut). An input with more columns than the table has positions is a ConfigError."""
    if not 1 <= columns <= positions:
        where = f"{model_id}: " if model_id else ""
        raise ConfigError(
            f"{where}the input has {columns} patch columns; the positional embedding has {positions} time positions",
            hint="inputs must be at least one patch and at most the model's max_window long",
        )
    start = positions // 2 - columns // 2 if centre else 0
    return slice(start, start + columns)


def crop_time_embedding(table: Tensor, columns: int, dim: int = -1, centre: bool = False, model_id: str = "") -> Tensor:
    """A factorised time positional table (time along `dim`, e.g. PaSST's (1, D, 1, T)) cut to an
    input's `columns` patch columns: a view, added to the patch grid as the full table would be."""
    window = time_window(table.shape[dim], columns, centre, model_id)
    return table.narrow(dim, window.start, columns)


def crop_flat_embedding(
    table: Tensor, grid: tuple[int, int], columns: int, tokens: int = 0, layout: Layout = "ft", centre: bool = False, model_id: str = ""
) -> Tensor:
    """A flat positional table (1, tokens + F*T, D) -- tokens first, then the full (F, T) grid in
    `layout` order -- cut to an input's `columns` patch columns: (1, tokens + F*columns, D), the
    token rows unchanged, each frequency row's time positions cut as `time_window` says."""
    _check_layout(layout)
    bands, positions = grid
    if table.shape[1] != tokens + bands * positions:
        raise ValueError(f"a table of {table.shape[1]} rows is not {tokens} tokens + a {bands} x {positions} grid")
    window = time_window(positions, columns, centre, model_id)
    rows, dim = table.shape[0], table.shape[-1]
    patches = table[:, tokens:]
    if layout == "ft":
        kept = patches.reshape(rows, bands, positions, dim)[:, :, window]
    else:
        kept = patches.reshape(rows, positions, bands, dim)[:, window]
    return torch.cat((table[:, :tokens], kept.reshape(rows, bands * columns, dim)), dim=1)
