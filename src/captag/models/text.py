"""Text encoders: a transformers model with mean pooling, cut into stages like the image encoders.

Stage 0 is the embedding layer and stage i the i-th transformer layer, for BERT-style models
(BERT, MiniLM, TinyBERT). Other architectures run as one stage: frozen or fully trained.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from captag.models import weights as weights_lib
from captag.models.catalog import UNCASED_VOCAB, canonical_name, find


def _load_pretrained(plan: weights_lib.WeightsPlan):
    location = str(weights_lib.fetch(plan)) if plan.offline else plan.location
    local_only = plan.kind != "hub" or weights_lib.hub_offline()
    try:
        model = AutoModel.from_pretrained(location, local_files_only=local_only)
        tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=local_only)
    except OSError as error:
        if plan.kind == "hub":
            raise weights_lib.WeightsNotFoundError(
                weights_lib.missing_weights_message(plan, error)) from error
        raise
    return model, tokenizer


def _load_random(name: str):
    """An untrained model: its config from the catalog (with BERT's uncased vocabulary), or
    config and tokenizer from the hub or its local cache."""
    from transformers import AutoConfig, CONFIG_MAPPING
    spec = find(name)
    if spec is not None and spec.config:
        settings = dict(spec.config)
        config = CONFIG_MAPPING[settings.pop("model_type")](**settings)
        vocab = weights_lib.plan_weights(UNCASED_VOCAB)
        tokenizer = AutoTokenizer.from_pretrained(weights_lib.fetch(vocab))
    else:
        local_only = weights_lib.hub_offline()
        try:
            config = AutoConfig.from_pretrained(name, local_files_only=local_only)
            tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local_only)
        except (OSError, ValueError) as error:
            raise weights_lib.WeightsNotFoundError(
                f"Building {name!r} without weights still needs its config and tokenizer, which "
                f"could not be found ({error}). Pass a local model folder with --weights "
                "(config.json and tokenizer files are enough).") from error
    weights_lib.warn_random(name)
    return AutoModel.from_config(config), tokenizer


def _from_config_dir(folder: str):
    from transformers import AutoConfig
    config = AutoConfig.from_pretrained(folder)
    return AutoModel.from_config(config), AutoTokenizer.from_pretrained(folder)


class TextEncoder(nn.Module):
    """A transformers encoder that maps tokenised captions to a mean-pooled feature vector."""

    def __init__(self, name: str = "all-MiniLM-L6-v2", weights: str | None = None,
                 max_length: int = 64, config_dir: str | None = None):
        """`weights`: None (its package, else the hub), 'hub', 'none' (random, with a warning)
        or a local model folder. With `config_dir` (a saved config and tokenizer) it builds the
        architecture only, looking for no weights: they are loaded afterwards."""
        super().__init__()
        self.name = canonical_name(name)
        self.source = weights_lib.plan_weights(self.name, "none" if config_dir else weights)
        if config_dir is not None:
            model, tokenizer = _from_config_dir(config_dir)
        elif self.source.kind == "none":
            model, tokenizer = _load_random(self.name)
        else:
            model, tokenizer = _load_pretrained(self.source)
        self.model = model
        self.tokenizer: PreTrainedTokenizerBase = tokenizer
        self.max_length = max_length
        self.feature_dim = model.config.hidden_size

    @property
    def layers(self) -> nn.ModuleList | None:
        """The transformer layers of a BERT-style model; None for other architectures."""
        encoder = getattr(self.model, "encoder", None)
        if self.model.config.model_type == "bert" and hasattr(encoder, "layer"):
            return encoder.layer
        return None

    def save_config(self, folder: str) -> None:
        """Write the config and tokenizer (not the weights) so the encoder can be rebuilt."""
        self.model.config.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)

    @property
    def num_stages(self) -> int:
        return 1 + len(self.layers) if self.layers is not None else 1

    def tokenize(self, captions: list[str]) -> dict[str, torch.Tensor]:
        out = self.tokenizer(captions, padding=True, truncation=True,
                             max_length=self.max_length, return_tensors="pt")
        return {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}

    def _additive_mask(self, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min

    def _run_layers(self, hidden: torch.Tensor, mask: torch.Tensor, first: int, last: int):
        extended = self._additive_mask(mask, hidden.dtype)
        for layer in self.layers[first:last]:
            out = layer(hidden, extended)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def lower(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, cut: int) -> torch.Tensor:
        """Token states after `cut` stages (cut >= 1: the embeddings and cut - 1 layers)."""
        if self.layers is None or cut < 1:
            raise ValueError(f"{self.name} can only be cut at stage 1..{self.num_stages - 1}.")
        hidden = self.model.embeddings(input_ids=input_ids)
        return self._run_layers(hidden, attention_mask, 0, cut - 1)

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor, start: int = 0):
        """Pooled features from token ids (start 0) or from stage-`start` token states."""
        if start >= self.num_stages:
            return tokens
        if start == 0:
            hidden = self.model(input_ids=tokens, attention_mask=attention_mask).last_hidden_state
        else:
            hidden = self._run_layers(tokens, attention_mask, start - 1, len(self.layers))
        return self.pool(hidden, attention_mask)
