"""AST, the Audio Spectrogram Transformer (Gong, Chung, Glass, "AST: Audio Spectrogram
Transformer", Interspeech 2021), on transformers' own classes (the reference).

- front end: `embedzoo.frontends.KaldiFbank` (128 bins, 25 / 10 ms, symmetric Hann "hanning",
  no dither: what ASTFeatureExtractor asks of torchaudio's `kaldi.fbank`), batched, then
  (x - mean) / (2 * std) with the card's mean and std (preprocessor_config.json);
- network: `transformers.ASTForAudioClassification` built from the card's config (random weights
  until a checkpoint is loaded), held as `self.model`, so the state dict is `model.` + transformers'
  keys. Its modules run one by one here -- the patch embedding, the flat positional table (whole, or
  cut to the input's columns for padding "crop"), each `ASTLayer`, the final LayerNorm, the pooler
  ((cls + dist) / 2) and the classifier -- so a forward stops after the last layer asked for, runs
  that block on the rows read only (`layer_on_rows`), and takes inputs shorter than transformers'
  fixed max_length frames.

The layers, their widths, tokens and frame grid are stated in `geometry.py`; `forward_layers`
returns them in their natural shapes: `fbank` (batch, frames, 128), `patch`, `block1`..`blockN`
and `norm` (batch, 2 + columns, 768: cls, dist, then one frame per patch column,
`embedzoo.layers.patch_columns`), `features` (batch, 768) and `logits` (batch, num_labels).
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from embedzoo.plugin import ConfigError, Extractor, ModelCard, WeightsError, frontends, remap_state_dict, unwrap_state_dict
from embedzoo.plugin import layers as vit  # embedzoo.layers: patch columns, positional-table cropping

from embedzoo_ast.geometry import DEFAULT_CONFIG, PADDINGS, SAMPLE_RATE, TOKENS, columns, grid, settings

# the card's config keys that are ASTConfig's (mean and std are the feature extractor's)
_MODEL_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act", "layer_norm_eps",
               "qkv_bias", "patch_size", "frequency_stride", "time_stride", "max_length", "num_mel_bins")  # fmt: skip


def hf_config(card: ModelCard) -> Any:
    """transformers' ASTConfig for this card (what its Hub repo's config.json says)."""
    from transformers import ASTConfig

    cfg = settings(card.config)
    return ASTConfig(**{key: cfg[key] for key in _MODEL_KEYS}, num_labels=cfg["num_labels"])


def layer_on_rows(layer: Any, x: Tensor, rows: Tensor) -> Tensor:
    """`layer(x)[:, rows]` for an ASTLayer, computed on those rows only: every row still gives keys
    and values, but the queries, the output projection and the MLP run on the rows read (a 1 s
    window padded to 1024 frames reads 122 of 1214; a scene's features read the 2 tokens). The
    layer's eval forward written out: transformers' takes no query subset."""
    attention, batch = layer.attention, x.shape[0]

    def heads(t: Tensor) -> Tensor:
        return t.view(batch, -1, attention.num_attention_heads, attention.head_dim).transpose(1, 2)

    normed = layer.layernorm_before(x)
    rows = rows.to(x.device)
    query = heads(attention.q_proj(normed[:, rows]))
    context = F.scaled_dot_product_attention(query, heads(attention.k_proj(normed)), heads(attention.v_proj(normed)), scale=attention.scaling)
    x = x[:, rows] + attention.o_proj(context.transpose(1, 2).reshape(batch, len(rows), -1))
    return x + layer.mlp(layer.layernorm_after(x))


class AST(Extractor):
    """The AudioSet and Speech Commands ASTs (MIT/ast-finetuned-*), as the card's `config` describes."""

    def __init__(self, card: ModelCard):
        super().__init__(card)
        from transformers import ASTForAudioClassification

        self.cfg = settings(card.config)
        self.fbank = frontends.KaldiFbank(n_mels=self.cfg["num_mel_bins"], sample_rate=SAMPLE_RATE, window="hanning")
        self.model = ASTForAudioClassification(hf_config(card)).eval()
        self.grid = grid(self.cfg)  # (frequency rows, time columns) of the positional table
        # geometry.py's order: fbank, patch, block1..blockN, norm, features, logits
        self.layer_names = tuple(spec.name for spec in card.layers)

    def normalise(self, fbank: Tensor) -> Tensor:
        """ASTFeatureExtractor's normalisation, (x - mean) / (std * 2)."""
        return (fbank - self.cfg["mean"]) / (self.cfg["std"] * 2)

    def _rows_read(self, grid_t: int, cols: int) -> Tensor | None:
        """The sequence rows holding the tokens and the first `cols` patch columns of every
        frequency row (None: all of them), in the sequence's frequency-major order."""
        if cols == grid_t:
            return None
        patches = torch.arange(self.grid[0])[:, None] * grid_t + torch.arange(cols)[None, :]
        return torch.cat((torch.arange(len(TOKENS)), len(TOKENS) + patches.flatten()))

    def forward_layers(self, audio: Tensor, layers: Sequence[str] | None = None, padding: str = PADDINGS[0]) -> list[Tensor]:
        """Requested layers (all when None) in their natural shapes, computing no block past the
        last one asked for. `padding` "reference" zero-pads the fbank to max_length frames (before
        normalising, as ASTFeatureExtractor); "crop" runs the input's own columns with the middle
        of the time positions (see geometry.py)."""
        wanted = list(self.layer_names if layers is None else layers)
        unknown = [name for name in wanted if name not in self.layer_names]
        if unknown:
            raise ConfigError(f"{self.card.id} has no layer(s) {unknown}", hint=f"layers: {', '.join(self.layer_names)}")
        if padding not in PADDINGS:
            raise ConfigError(f"{self.card.id} has no padding {padding!r}", hint=f"paddings: {', '.join(PADDINGS)}")
        last = max(self.layer_names.index(name) for name in wanted)
        fbank = self.fbank(audio)  # (B, frames, bins), float32
        frames, max_length = fbank.shape[1], self.cfg["max_length"]
        if frames > max_length:
            raise ConfigError(
                f"{self.card.id}: an input of {audio.shape[-1]} samples has {frames} fbank frames; the model takes at most {max_length}",
                hint=f"inputs must be at most {self.card.max_window} samples (the core windows longer audio)",
            )
        out: dict[str, Tensor] = {"fbank": self.normalise(fbank)}
        if last >= 1:
            out.update(self._transformer(fbank, wanted, last, padding))
        return [out[name] for name in wanted]

    def _transformer(self, fbank: Tensor, wanted: list[str], last: int, padding: str) -> dict[str, Tensor]:
        """Everything after the front end: the embeddings, the blocks, the norm and the heads."""
        cfg, out = self.cfg, {}
        cols = columns(fbank.shape[1], cfg)  # the patch columns this input covers
        ast = self.model.audio_spectrogram_transformer
        table = ast.embeddings.position_embeddings
        if padding == "reference":
            length, positions = cfg["max_length"], table
        else:  # the frames of `cols` whole patches (an input shorter than one patch is padded to it)
            length = (cols - 1) * cfg["time_stride"] + cfg["patch_size"]
            positions = vit.crop_flat_embedding(table, self.grid, cols, tokens=len(TOKENS), centre=True, model_id=self.card.id)
        fbank = fbank[:, :length]
        fbank = F.pad(fbank, (0, 0, 0, length - fbank.shape[1]))  # zero frames, then normalised: the reference's padding
        patches = ast.embeddings.patch_embeddings(self.normalise(fbank))  # (B, F * T, D), frequency-major
        batch = patches.shape[0]
        grid_t = patches.shape[1] // self.grid[0]
        tokens = (ast.embeddings.cls_token.expand(batch, -1, -1), ast.embeddings.distillation_token.expand(batch, -1, -1))
        hidden = torch.cat((*tokens, patches), dim=1) + positions  # hidden_states[0]

        def read(sequence: Tensor) -> Tensor:  # tokens, then the input's columns
            return vit.patch_columns(sequence, (self.grid[0], grid_t), tokens=len(TOKENS))[:, : len(TOKENS) + cols]

        if "patch" in wanted:
            out["patch"] = read(hidden)
        depth = cfg["num_hidden_layers"]
        computed = min(last - 1, depth)  # the blocks run: block<computed> is the last
        # the last block runs on the rows read only: the tokens, plus the input's columns where a
        # token map is read from it (with "reference" padding the rest are padding's)
        maps_read = f"block{computed}" in wanted or (computed == depth and "norm" in wanted)
        rows = self._rows_read(grid_t, cols if maps_read else 0)
        for index, layer in enumerate(ast.layers[:computed]):
            if index + 1 < computed or rows is None:
                hidden = layer(hidden, None)
            else:
                hidden = layer_on_rows(layer, hidden, rows)
                grid_t = cols  # the sequence is now the tokens + the F x cols patches read
            name = f"block{index + 1}"
            if name in wanted:
                out[name] = read(hidden)
        if last > 1 + depth:
            hidden = ast.layernorm(hidden)
            if "norm" in wanted:
                out["norm"] = read(hidden)
            out["features"] = (hidden[:, 0] + hidden[:, 1]) / 2  # ASTModel's pooler_output
            out["logits"] = self.model.classifier(out["features"])
        return out


# ---- checkpoints ------------------------------------------------------------------------------

_BASE = "audio_spectrogram_transformer."
# the Hub repos' layout (written by transformers 4 and, still, by 5.x's save_pretrained) -> the module names of 5.x
_HUB_RENAMES = (
    (re.compile(r"^encoder\.layer\.(\d+)\.attention\.attention\.query\."), r"layers.\1.attention.q_proj."),
    (re.compile(r"^encoder\.layer\.(\d+)\.attention\.attention\.key\."), r"layers.\1.attention.k_proj."),
    (re.compile(r"^encoder\.layer\.(\d+)\.attention\.attention\.value\."), r"layers.\1.attention.v_proj."),
    (re.compile(r"^encoder\.layer\.(\d+)\.attention\.output\.dense\."), r"layers.\1.attention.o_proj."),
    (re.compile(r"^encoder\.layer\.(\d+)\.intermediate\.dense\."), r"layers.\1.mlp.fc1."),
    (re.compile(r"^encoder\.layer\.(\d+)\.output\.dense\."), r"layers.\1.mlp.fc2."),
    (re.compile(r"^encoder\.layer\.(\d+)\.(layernorm_before|layernorm_after)\."), r"layers.\1.\2."),
)
# the authors' checkpoints (YuanGongND/ast, `audioset_10_10_0.4593.pth`: a DataParallel timm DeiT
# `v` plus `mlp_head`) -> the same names; the fused qkv projection is split first (`_split_qkv`)
_ORIGINAL_RENAMES = (
    (re.compile(r"^v\.cls_token$"), _BASE + "embeddings.cls_token"),
    (re.compile(r"^v\.dist_token$"), _BASE + "embeddings.distillation_token"),
    (re.compile(r"^v\.pos_embed$"), _BASE + "embeddings.position_embeddings"),
    (re.compile(r"^v\.patch_embed\.proj\."), _BASE + "embeddings.patch_embeddings.projection."),
    (re.compile(r"^v\.blocks\.(\d+)\.norm1\."), _BASE + r"layers.\1.layernorm_before."),
    (re.compile(r"^v\.blocks\.(\d+)\.norm2\."), _BASE + r"layers.\1.layernorm_after."),
    (re.compile(r"^v\.blocks\.(\d+)\.attn\.(q|k|v)_split\."), _BASE + r"layers.\1.attention.\2_proj."),
    (re.compile(r"^v\.blocks\.(\d+)\.attn\.proj\."), _BASE + r"layers.\1.attention.o_proj."),
    (re.compile(r"^v\.blocks\.(\d+)\.mlp\.(fc1|fc2)\."), _BASE + r"layers.\1.mlp.\2."),
    (re.compile(r"^v\.norm\."), _BASE + "layernorm."),
    (re.compile(r"^mlp_head\.0\."), "classifier.layernorm."),
    (re.compile(r"^mlp_head\.1\."), "classifier.dense."),
)
# timm's ImageNet heads inside the original `v`: AST's forward never reads them
_ORIGINAL_UNUSED = re.compile(r"^v\.(head|head_dist)\.(weight|bias)$")
_QKV = re.compile(r"^(v\.blocks\.\d+\.attn\.)qkv\.(weight|bias)$")


def _first(renames: Sequence[tuple[re.Pattern, str]], key: str) -> str | None:
    for pattern, replacement in renames:
        if pattern.search(key):
            return pattern.sub(replacement, key, count=1)
    return None


def _split_qkv(state: Mapping[str, Any]) -> dict[str, Any]:
    """The original checkpoint with each fused `attn.qkv` cut into its query, key and value thirds
    (timm's order), under names `_ORIGINAL_RENAMES` maps; the ImageNet heads dropped by name."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        if _ORIGINAL_UNUSED.match(key):
            continue
        match = _QKV.match(key)
        if match and isinstance(value, Tensor) and value.shape[0] % 3 == 0:
            for part, chunk in zip("qkv", value.chunk(3, dim=0)):
                out[f"{match.group(1)}{part}_split.{match.group(2)}"] = chunk
        else:
            out[key] = value
    return out


def _hub_name(ours: str) -> str:
    """One of our keys as the Hub repos name it (for errors about a missing key)."""
    key = ours.removeprefix("model.")
    layer = re.match(r"^audio_spectrogram_transformer\.layers\.(\d+)\.(.*)$", key)
    if not layer:
        return key
    index, rest = layer.groups()
    names = {"attention.q_proj.": "attention.attention.query.", "attention.k_proj.": "attention.attention.key.",
             "attention.v_proj.": "attention.attention.value.", "attention.o_proj.": "attention.output.dense.",
             "mlp.fc1.": "intermediate.dense.", "mlp.fc2.": "output.dense."}  # fmt: skip
    for new, old in names.items():
        if rest.startswith(new):
            rest = old + rest[len(new) :]
    return f"{_BASE}encoder.layer.{index}.{rest}"


_ORIGINAL_NAMES = (
    (re.compile(r"^embeddings\.cls_token$"), "v.cls_token"),
    (re.compile(r"^embeddings\.distillation_token$"), "v.dist_token"),
    (re.compile(r"^embeddings\.position_embeddings$"), "v.pos_embed"),
    (re.compile(r"^embeddings\.patch_embeddings\.projection\."), "v.patch_embed.proj."),
    (re.compile(r"^layers\.(\d+)\.layernorm_before\."), r"v.blocks.\1.norm1."),
    (re.compile(r"^layers\.(\d+)\.layernorm_after\."), r"v.blocks.\1.norm2."),
    (re.compile(r"^layers\.(\d+)\.attention\.[qkv]_proj\."), r"v.blocks.\1.attn.qkv."),
    (re.compile(r"^layers\.(\d+)\.attention\.o_proj\."), r"v.blocks.\1.attn.proj."),
    (re.compile(r"^layers\.(\d+)\.mlp\."), r"v.blocks.\1.mlp."),
    (re.compile(r"^layernorm\."), "v.norm."),
)


def _original_name(ours: str) -> str:
    """One of our keys as the authors' checkpoints name it (for errors about a missing key)."""
    key = ours.removeprefix("model.")
    if key.startswith("classifier."):
        return "mlp_head." + key.removeprefix("classifier.").replace("layernorm.", "0.").replace("dense.", "1.")
    return _first(_ORIGINAL_NAMES, key.removeprefix(_BASE)) or key


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: AST) -> dict[str, Tensor]:
    """An AST checkpoint -> this model's keys (`model.` + transformers 5's ASTForAudioClassification keys).

    Accepts the Hub repos' `model.safetensors` / `pytorch_model.bin` (what save_pretrained writes:
    `audio_spectrogram_transformer.encoder.layer.N.attention.attention.query.weight`, ...,
    `classifier.*`), the same without the `audio_spectrogram_transformer.` prefix (an ASTModel's
    file: its classifier is then missing, and named), transformers 5's in-memory names
    (`...layers.N.attention.q_proj.weight`, a `state_dict()` saved with torch.save), wrapped
    checkpoints ("model"/"state_dict", "module." prefixes), and the authors' original files
    (YuanGongND/ast: `module.v.blocks.N.attn.qkv.weight`, `module.mlp_head.*`; the fused qkv is split,
    timm's unused ImageNet heads `v.head`/`v.head_dist` are dropped by name). Any other key, a
    missing key or a shape that does not fit raises WeightsError naming it (`remap_state_dict`).
    """
    state = unwrap_state_dict(state_dict, model.card.id)
    original = any(key.startswith(("v.blocks.", "v.pos_embed", "mlp_head.")) for key in state)
    if original:
        state = _split_qkv(state)

    def rename(key: str) -> str | None:
        if original:
            new = _first(_ORIGINAL_RENAMES, key)
            return None if new is None else "model." + new
        key = key.removeprefix("model.")
        if not key.startswith((_BASE, "classifier.")):
            key = _BASE + key  # an ASTModel's own file
        rest = key.removeprefix(_BASE)
        if rest != key:
            key = _BASE + (_first(_HUB_RENAMES, rest) or rest)
        return "model." + key

    shapes = "is this the checkpoint of this AST variant (strides, max_length, num_mel_bins, num_labels, width)?"
    return remap_state_dict(
        state,
        model.state_dict(),
        rename,
        model_id=model.card.id,
        their_name=_original_name if original else _hub_name,
        optional=lambda key: False,  # no BatchNorm: every tensor must come from the file
        unused_hint="is this an AST checkpoint (a MIT/ast-* Hub repo's model.safetensors, or the authors' .pth)?",
        missing_hint="is this an ASTForAudioClassification checkpoint? (an ASTModel's file has no classifier)",
        shape_hint=shapes,
    )


# ---- the Hub repo's own files -------------------------------------------------------------------

# config.json key -> the card's config key (config.json omits nothing transformers writes, but an
# older or hand-written file may: a missing key is ASTConfig's default, as transformers reads it)
_CONFIG_KEYS = _MODEL_KEYS
# preprocessor_config.json: the front end (ASTFeatureExtractor's defaults for missing keys)
_PREPROCESSOR_KEYS = ("num_mel_bins", "max_length", "mean", "std")
_PREPROCESSOR_FIXED = {"sampling_rate": SAMPLE_RATE, "do_normalize": True, "padding_value": 0.0, "feature_size": 1}


def _same(ours: Any, theirs: Any) -> bool:
    if isinstance(ours, bool) or isinstance(theirs, bool) or isinstance(ours, str) or isinstance(theirs, str):
        return ours == theirs
    try:
        return math.isclose(float(ours), float(theirs), rel_tol=1e-6, abs_tol=0.0)
    except (TypeError, ValueError):
        return False


def check_repo_files(card: ModelCard, files: Mapping[str, Mapping[str, Any]]) -> None:
    """Refuse a Hub repo whose config.json or preprocessor_config.json disagrees with the card: an
    architecture key (width, depth, strides, max_length, bins, labels, eps, ...) or a front-end key
    (bins, max_length, mean, std, rate, do_normalize). The error names the file and the key."""
    cfg = settings(card.config)

    def refuse(name: str, key: str, theirs: Any, ours: Any) -> None:
        raise WeightsError(
            f"{name} of {card.id}'s checkpoint says {key} = {theirs!r}; the card's config says {ours!r}",
            hint=f"is this a checkpoint of {card.id}? a checkpoint of another AST variant needs a card whose config matches its {name}",
        )

    config = files.get("config.json")
    if config is not None:
        model_type = config.get("model_type", "audio-spectrogram-transformer")
        if model_type != "audio-spectrogram-transformer":
            refuse("config.json", "model_type", model_type, "audio-spectrogram-transformer")
        for key in _CONFIG_KEYS:
            theirs = config.get(key, DEFAULT_CONFIG[key])
            if not _same(cfg[key], theirs):
                refuse("config.json", key, theirs, cfg[key])
        labels = len(config["id2label"]) if isinstance(config.get("id2label"), Mapping) else config.get("num_labels", 2)
        if labels != cfg["num_labels"]:
            refuse("config.json", "num_labels (id2label)", labels, cfg["num_labels"])
    preprocessor = files.get("preprocessor_config.json")
    if preprocessor is not None:
        kind = preprocessor.get("feature_extractor_type", "ASTFeatureExtractor")
        if kind != "ASTFeatureExtractor":
            refuse("preprocessor_config.json", "feature_extractor_type", kind, "ASTFeatureExtractor")
        for key in _PREPROCESSOR_KEYS:
            theirs = preprocessor.get(key, DEFAULT_CONFIG[key])
            if not _same(cfg[key], theirs):
                refuse("preprocessor_config.json", key, theirs, cfg[key])
        for key, ours in _PREPROCESSOR_FIXED.items():
            theirs = preprocessor.get(key, ours)
            if not _same(ours, theirs):
                refuse("preprocessor_config.json", key, theirs, ours)


def create_model(card: ModelCard) -> AST:
    """An AST for this card (config keys: geometry.DEFAULT_CONFIG), with random weights."""
    return AST(card)
