"""embedzoo.remap.remap_state_dict: the lossless renaming every checkpoint_filter_fn relies on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedzoo.errors import WeightsError
from embedzoo.remap import remap_state_dict

TARGET = {
    "blocks.0.weight": torch.zeros(4, 3),
    "blocks.0.bn.num_batches_tracked": torch.zeros((), dtype=torch.long),
    "se.weight": torch.zeros(2, 4, 1, 1),
    "head.bias": torch.zeros(5),
}
RENAMES = {"conv1.weight": "blocks.0.weight", "conv1.bn.num_batches_tracked": "blocks.0.bn.num_batches_tracked", "fc.bias": "head.bias", "se_fc.weight": "se.weight"}
THEIRS = {ours: theirs for theirs, ours in RENAMES.items()}


def original() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "conv1.weight": torch.randn(4, 3, generator=g),
        "conv1.bn.num_batches_tracked": torch.tensor(7),
        "se_fc.weight": torch.randn(2, 4, generator=g),  # a Linear where we use a 1x1 conv
        "fc.bias": torch.randn(5, generator=g),
    }


def remap(source, **options):
    options.setdefault("adapt", lambda ours, v: v.reshape(*v.shape, 1, 1) if ours == "se.weight" and v.ndim == 2 else v)
    return remap_state_dict(source, TARGET, RENAMES.get, model_id="toy", their_name=lambda k: THEIRS.get(k, k), **options)


def test_every_tensor_lands_once_in_the_models_order():
    source = original()
    out = remap(source)
    assert list(out) == list(TARGET)
    assert torch.equal(out["blocks.0.weight"], source["conv1.weight"])
    assert torch.equal(out["se.weight"][:, :, 0, 0], source["se_fc.weight"])
    assert int(out["blocks.0.bn.num_batches_tracked"]) == 7
    again = remap(out)  # an already-converted state dict passes through under its own names
    assert all(torch.equal(again[k], out[k]) for k in TARGET)


def test_an_optional_key_may_be_absent_and_is_filled():
    source = {k: v for k, v in original().items() if not k.endswith("num_batches_tracked")}
    assert int(remap(source)["blocks.0.bn.num_batches_tracked"]) == 0
    filled = remap(source, fill=lambda key, t: torch.full_like(t, 3))
    assert int(filled["blocks.0.bn.num_batches_tracked"]) == 3
    with pytest.raises(WeightsError, match=r"lacks 'conv1\.bn\.num_batches_tracked' for toy"):
        remap(source, optional=lambda key: False)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s.pop("fc.bias"), r"lacks 'fc\.bias' for toy"),
        (lambda s: s.update(stray=torch.zeros(1)), r"'stray' has no place in toy"),
        (lambda s: s.update({"head.bias": torch.zeros(5)}), r"'fc\.bias' and 'head\.bias' both map to 'head\.bias'"),
        (lambda s: s.update({"conv1.weight": torch.zeros(3, 4)}), r"'conv1\.weight' has shape \(3, 4\); toy needs \(4, 3\) for 'blocks\.0\.weight'"),
        (lambda s: s.update({"fc.bias": np.zeros(5)}), r"'fc\.bias' holds a ndarray, not a tensor"),
    ],
)
def test_errors_name_the_key(change, message):
    source = original()
    change(source)
    with pytest.raises(WeightsError, match=message):
        remap(source)
