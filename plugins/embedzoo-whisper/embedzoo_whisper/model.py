"""The encoder of Whisper (Radford et al., "Robust Speech Recognition via Large-Scale Weak
Supervision", 2022), on transformers' own `WhisperEncoder` (the reference implementation).

- front end: `embedzoo.frontends.WhisperLogMel(pad_to=480000)`, equal to `WhisperFeatureExtractor`:
  every input zero-padded to 30 s, 80 (large-v3: 128) log-mel bins every 10 ms, floored at the padded
  input's maximum - 8, (x + 4) / 4;
- transformers' `WhisperEncoder` built from the card's config (no files): conv1, conv2, the
  sinusoidal positional table, `encoder_layers` WhisperEncoderLayers and the final LayerNorm, run
  module by module so asking for `block3` computes no later block, and the last block computed only
  on the tokens kept (`layer_on_first_rows`).

`forward_layers` returns (batch, frames, d_model) for every layer (geometry.py): `embed` =
hidden_states[0], `block1`..`blockN` = hidden_states[1..N] as transformers returns them (blockN is
after the final LayerNorm: transformers ties hidden_states[-1] to last_hidden_state), `norm` =
last_hidden_state. `padding="trim"` keeps the ceil(samples / 320) tokens centred inside the input,
`padding="reference"` all 1500.

Checkpoints: the Hub repos hold the whole WhisperForConditionalGeneration; `checkpoint_filter_fn`
keeps `model.encoder.*` and drops the decoder and `proj_out` by name.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder, WhisperEncoderLayer

from embedzoo.plugin import ConfigError, Extractor, ModelCard, WeightsError, frontends, remap_state_dict, unwrap_state_dict

from embedzoo_whisper.geometry import MEL_HOP, N_FFT, PADDINGS, SAMPLE_RATE, layer_names, max_samples, settings, tokens


def hf_config(cfg: Mapping[str, int]) -> WhisperConfig:
    """transformers' WhisperConfig for the encoder a card describes (the decoder's fields keep their
    defaults: the decoder is never built)."""
    return WhisperConfig(
        d_model=cfg["d_model"],
        encoder_layers=cfg["encoder_layers"],
        encoder_attention_heads=cfg["encoder_attention_heads"],
        encoder_ffn_dim=cfg["encoder_ffn_dim"],
        num_mel_bins=cfg["num_mel_bins"],
        max_source_positions=cfg["max_source_positions"],
    )


def layer_on_first_rows(layer: WhisperEncoderLayer, x: Tensor, rows: int) -> Tensor:
    """`layer(x)[:, :rows]`, computed on those rows only: every token still gives keys and values,
    but the queries, the output projection and the MLP run on the rows read. The last block computed
    is read on the trimmed tokens only (500 of 1500 for a 10 s clip), which the reference computes
    all of and cuts. WhisperEncoderLayer.forward in eval mode, written out because it takes no
    query subset; its attention module takes one as cross-attention (`key_value_states`)."""
    normed = layer.self_attn_layer_norm(x)
    attended, _ = layer.self_attn(hidden_states=normed[:, :rows], key_value_states=normed, attention_mask=None)
    x = x[:, :rows] + attended
    x = x + layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(x))))
    if x.dtype == torch.float16:  # the reference's clamp of float16 activations
        limit = torch.finfo(x.dtype).max - 1000
        x = x.clamp(min=-limit, max=limit)
    return x


class Whisper(Extractor):
    """Whisper's encoder (tiny ... large-v3), as the card's `config` describes."""

    def __init__(self, card: ModelCard):
        super().__init__(card)
        cfg = settings(card.config)
        self.depth = cfg["encoder_layers"]
        self.max_samples = max_samples(cfg)
        self.frontend = frontends.WhisperLogMel(n_mels=cfg["num_mel_bins"], sample_rate=SAMPLE_RATE, n_fft=N_FFT, hop=MEL_HOP, pad_to=self.max_samples)
        self.encoder = WhisperEncoder(hf_config(cfg))  # state dict keys: encoder.<WhisperEncoder's keys>
        self.layer_names = layer_names(cfg)

    def forward_layers(self, audio: Tensor, layers: Sequence[str] | None = None, padding: str = "trim") -> list[Tensor]:
        """Requested layers (all when None), each (batch, frames, d_model): the ceil(samples / 320)
        tokens centred inside the input (`trim`), or all 1500 of the 30 s input (`reference`)."""
        wanted = list(self.layer_names if layers is None else layers)
        unknown = [name for name in wanted if name not in self.layer_names]
        if unknown:
            raise ConfigError(f"{self.card.id} has no layer(s) {unknown}", hint=f"layers: {', '.join(self.layer_names)}")
        if padding not in PADDINGS:
            raise ConfigError(f"{self.card.id} has no padding {padding!r}", hint=f"paddings: {', '.join(PADDINGS)}")
        samples = audio.shape[-1]
        if samples > self.max_samples:
            raise ConfigError(
                f"{self.card.id} takes at most {self.max_samples} samples (30 s) per forward, got {samples}",
                hint="embed long audio through the model's embed / scene / timestamp calls, which window it",
            )
        keep = self.encoder.config.max_source_positions if padding == "reference" else tokens(samples)
        # the deepest layer asked for: 0 = embed, i = block i, depth + 1 = norm (= block<depth>)
        last = max(min(self.layer_names.index(name), self.depth) for name in wanted)
        encoder = self.encoder
        mel = self.frontend(audio)  # (B, n_mels, 3000): the whole padded 30 s, as the reference
        x = nn.functional.gelu(encoder.conv1(mel.to(encoder.conv1.weight.dtype)))
        x = nn.functional.gelu(encoder.conv2(x)).transpose(1, 2)
        x = x + encoder.embed_positions.weight
        out: dict[str, Tensor] = {"embed": x}
        for index, layer in enumerate(encoder.layers[:last]):
            x = layer(x, None) if index + 1 < last or keep == x.shape[1] else layer_on_first_rows(layer, x, keep)
            out[f"block{index + 1}"] = x
        if last == self.depth:  # transformers' last hidden state is after the final LayerNorm
            x = encoder.layer_norm(x)
            out[f"block{self.depth}"] = out["norm"] = x
        return [out[name][:, :keep] for name in wanted]


# ---- checkpoints ------------------------------------------------------------------------------

# The Hub repos (openai/whisper-*) hold WhisperForConditionalGeneration: `model.encoder.*` (kept),
# `model.decoder.*` (the text decoder: embedzoo exposes the encoder only) and, in pickled files,
# `proj_out.weight` (the output projection, tied to the decoder's token embedding). A bare
# WhisperModel has `encoder.*` / `decoder.*`; a WhisperEncoder saved alone has no prefix.
_DECODER = ("model.decoder.", "decoder.")
_PROJ_OUT = "proj_out.weight"
_ENCODER_PREFIXES = ("model.encoder.", "encoder.")


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: Whisper) -> dict[str, Tensor]:
    """A Hub Whisper checkpoint -> this model's keys (`encoder.` + WhisperEncoder's keys).

    Accepts WhisperForConditionalGeneration (`model.encoder.`), WhisperModel (`encoder.`) and a bare
    WhisperEncoder's keys. The decoder (`model.decoder.*` / `decoder.*`) and `proj_out.weight` are
    dropped by name (not part of the encoder); any other key, a missing key or a shape that does not
    fit raises WeightsError naming it (`remap_state_dict`).
    """
    state = unwrap_state_dict(state_dict, model.card.id)
    kept = {k: v for k, v in state.items() if not k.startswith(_DECODER) and k != _PROJ_OUT}
    prefix = next((p for p in _ENCODER_PREFIXES if any(k.startswith(p) for k in kept)), "")

    def rename(key: str) -> str | None:
        if prefix and not key.startswith(prefix):
            return None
        return "encoder." + key[len(prefix) :]

    return remap_state_dict(
        kept,
        model.state_dict(),
        rename,
        model_id=model.card.id,
        their_name=lambda key: prefix + key.removeprefix("encoder."),
        optional=lambda key: False,  # no BatchNorm: every tensor, the positional table included, comes from the file
        unused_hint="is this a Whisper checkpoint (WhisperForConditionalGeneration / WhisperModel)?",
        missing_hint="is this a Whisper checkpoint, and whole?",
        shape_hint="is this the checkpoint of this Whisper size (d_model, layers, mel bins)?",
    )


# config.json keys that must equal the card's config (transformers' WhisperConfig names)
_CONFIG_KEYS = ("d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim", "num_mel_bins", "max_source_positions")


def check_repo_files(card: ModelCard, files: Mapping[str, Any]) -> None:
    """Refuse a repo whose config.json or preprocessor_config.json disagrees with the card: another
    size would not load, but another frontend (mel bins, hop, 30 s chunk, waveform normalisation)
    would run silently wrong. Raises WeightsError naming the file and key."""
    cfg = settings(card.config)

    def refuse(name: str, key: str, theirs: Any, ours: Any) -> None:
        raise WeightsError(
            f"{name} of {card.id}'s repo says {key}={theirs!r}, the card's config needs {ours!r}",
            hint=f"is this a checkpoint of {card.id}? a card for it states config {dict(card.config)}",
        )

    config = files.get("config.json")
    if config is not None:
        if config.get("model_type", "whisper") != "whisper":
            refuse("config.json", "model_type", config.get("model_type"), "whisper")
        for key in _CONFIG_KEYS:
            if key in config and config[key] != cfg[key]:
                refuse("config.json", key, config[key], cfg[key])
            if key not in config and key != "max_source_positions":
                refuse("config.json", key, None, cfg[key])
        if config.get("activation_function", "gelu") != "gelu":
            refuse("config.json", "activation_function", config["activation_function"], "gelu")
    pre = files.get("preprocessor_config.json")
    if pre is not None:
        expected = {
            "feature_size": cfg["num_mel_bins"],
            "sampling_rate": SAMPLE_RATE,
            "hop_length": MEL_HOP,
            "n_fft": N_FFT,
            "n_samples": max_samples(cfg),
            "nb_max_frames": max_samples(cfg) // MEL_HOP,
            "padding_value": 0.0,
        }
        for key, ours in expected.items():
            if key in pre and pre[key] != ours:
                refuse("preprocessor_config.json", key, pre[key], ours)
        if "feature_size" not in pre:
            refuse("preprocessor_config.json", "feature_size", None, cfg["num_mel_bins"])
        for key, ours in (("do_normalize", False), ("dither", 0.0)):
            if pre.get(key):  # the frontend neither normalises the waveform nor dithers
                refuse("preprocessor_config.json", key, pre[key], ours)


def create_model(card: ModelCard) -> Whisper:
    """A Whisper encoder for this card (config keys: geometry.REQUIRED), with random weights."""
    return Whisper(card)
