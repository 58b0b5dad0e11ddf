"""Rename an original checkpoint's tensors onto a model's state dict, losslessly, or say why not.

Every plugin's `checkpoint_filter_fn` does the same bookkeeping around its own key names: each
tensor of the file must land once on a key of the model with the right shape, and every key of the
model must be filled. `remap_state_dict` is that loop; a plugin gives only its renaming (and any
reshape), and checks or drops frontend tensors before calling it. `unwrap_state_dict` first takes
the tensors out of a training or release checkpoint's wrapping.

Torch-free at import (the weights wing re-exports `unwrap_state_dict`, and `embedzoo list` must not
import torch); torch is imported when a checkpoint is remapped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

from embedzoo.errors import WeightsError

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["remap_state_dict", "unwrap_state_dict", "is_bn_counter"]


def is_bn_counter(key: str) -> bool:
    """BatchNorm's `num_batches_tracked`: a training counter eval never reads; files may lack it."""
    return key.endswith("num_batches_tracked")


def remap_state_dict(
    source: Mapping[str, Any],
    target: Mapping[str, Tensor],
    rename: Callable[[str], str | None],
    *,
    model_id: str,
    their_name: Callable[[str], str] = lambda key: key,
    adapt: Callable[[str, Tensor], Tensor] | None = None,
    optional: Callable[[str], bool] = is_bn_counter,
    fill: Callable[[str, Tensor], Tensor] | None = None,
    unused_hint: str = "is this the right checkpoint for this model? nothing may be left unused",
    missing_hint: str = "the checkpoint is truncated or of another model",
    shape_hint: str | None = None,
) -> dict[str, Tensor]:
    """`source` (the file's tensors) -> a state dict with exactly `target`'s keys, in its order.

    A key the model has passes through under its own name (already-converted files); any other is
    renamed with `rename` (None: it has no place). `adapt(ours, tensor)` may reshape or cast a
    tensor before the shape check (a Linear stored where we use a 1x1 conv). Keys for which `optional`
    holds may be absent from the file: `fill(ours, target_tensor)` gives their value (zeros by
    default). `their_name` names a missing key of ours as the file would, for the error.

    Raises WeightsError naming the key for a non-tensor value, a key with no place, two keys
    landing on one, a wrong shape, or keys the file lacks.
    """
    from torch import Tensor

    out: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in source.items():
        if not isinstance(value, Tensor):
            raise WeightsError(f"checkpoint key {key!r} holds a {type(value).__name__}, not a tensor")
        ours = key if key in target else rename(key)
        if ours is None or ours not in target:
            raise WeightsError(f"checkpoint key {key!r} has no place in {model_id}", hint=unused_hint)
        if ours in out:
            raise WeightsError(f"checkpoint keys {origin[ours]!r} and {key!r} both map to {ours!r}")
        stored = tuple(value.shape)
        if adapt is not None:
            value = adapt(ours, value)
        expected = tuple(target[ours].shape)
        if tuple(value.shape) != expected:
            raise WeightsError(f"checkpoint key {key!r} has shape {stored}; {model_id} needs {expected} for {ours!r}", hint=shape_hint)
        out[ours] = value.contiguous()
        origin[ours] = key
    missing = [key for key in target if key not in out and not optional(key)]
    if missing:
        names = ", ".join(repr(their_name(key)) for key in missing[:8])
        raise WeightsError(f"checkpoint lacks {names}{' ...' if len(missing) > 8 else ''} for {model_id}", hint=missing_hint)
    fill = fill or (lambda key, tensor: tensor.new_zeros(tensor.shape))
    return {key: out[key] if key in out else fill(key, target[key]) for key in target}


def unwrap_state_dict(checkpoint: Any, model_id: str = "") -> dict[str, Any]:
    """The tensors of a training or release checkpoint, for a plugin's `checkpoint_filter_fn`.

    Accepts a plain state dict, one nested under "state_dict" or "model" (at any depth), and
    DataParallel's "module." prefixes; anything else (a pickled model object) is a WeightsError.
    """
    if not isinstance(checkpoint, Mapping):
        raise WeightsError(
            f"expected a state dict (names to tensors) for {model_id or 'this model'}, got a {type(checkpoint).__name__}",
            hint="save the model's state_dict(), not the model object",
        )
    while True:
        inner = next((checkpoint[k] for k in ("state_dict", "model") if isinstance(checkpoint.get(k), Mapping)), None)
        if inner is None:
            break
        checkpoint = inner
    return {key.removeprefix("module."): value for key, value in checkpoint.items()}
