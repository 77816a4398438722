"""Token-level reward model: any Hugging Face backbone plus an MLP head, one reward per token.

For generated tokens y_1..y_T the model returns r_1..r_T, where r_t depends on the hidden state
that has seen y_<=t (and the source, when there is one):

- ``seq2seq`` (EncoderDecoderModel, T5, BART): the source goes into the encoder; the decoder is
  fed [decoder_start] + y and position t reads the decoder state for input y_t. Callers holding
  a frozen encoder's output may pass ``encoder_hidden_states`` and skip the encoder.
- ``causal_lm`` (GPT-2, ...): the LM body reads [source] + y (source optional); causal
  attention means position t has seen exactly y_<=t.
- ``encoder`` (BERT, MiniLM, ...): same layout as causal, but attention is bidirectional, so
  each token's reward may also depend on tokens after it. Fine for ranking, but weaker as
  per-token credit; prefer a decoder backbone when that matters.

``input_ids`` are the generated tokens only: no decoder start token, no [CLS]; include the EOS
token if the policy generates one. Pads (``attention_mask`` 0) get a reward of exactly 0.

Head: Linear(H, head_hidden) → ReLU → Linear(head_hidden, 1), Xavier init with a tiny gain
(1e-4) so every token starts with almost the same reward. Output squashing:

- ``softplus`` (default, as in the paper's code): u = 1 − softplus(1 − x),
  r = 1e-8 + softplus(u). A smooth clamp to (1e-8, softplus(1) ≈ 1.31); r ≈ 0.55 at x = 0.
- ``sigmoid``: r = σ(x) in (0, 1) (float32 may round the ends to 0 or 1).

With ``freeze_backbone=True`` only the head trains; the backbone runs without gradients and
stays in eval mode (no dropout) even when the module is put in train mode. ``trainable_layers=n``
(with ``freeze_backbone=False``) trains only the top n transformer layers of the token stack and the
head; ``None`` trains the whole backbone. A trainable backbone cannot have its states cached, so the
guidance trainer then runs it at every step.

stays in eval mode (no dropout) even when the module is put in train mode.

Saving: a frozen backbone built by ``from_spec`` is saved as a reference (its ``ModelSpec`` and a
SHA-256 of its weights, checked on load), not as a copy; only the head is written. With
``trainable_layers=n`` the top n layers are written beside the head and the rest is the reference. A
wholly trainable backbone (or one not built from a spec) is saved with ``save_pretrained``. One call
loads any of them::

    model = TokenRewardModel.load(folder)
    model.token_rewards(["a text"])   # [[(token, reward), ...]]
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)

from components.models import ModelSpec, load_model, load_tokenizer, weights_sha256

BACKBONE_KINDS = ("encoder", "causal_lm", "seq2seq")
SQUASHES = ("softplus", "sigmoid")
CONFIG_FILE = "reward_model.json"
HEAD_FILE = "head.pt"
TRAINED_LAYERS_FILE = "trained_layers.pt"  # trainable_layers=n: the top n layers' weights
TOKENIZER_DIR = "tokenizer"
MIN_REWARD = 1e-8  # keeps real tokens strictly above pads (0) even where softplus underflows


def backbone_kind(model: nn.Module) -> str:
    """Guess ``encoder`` / ``causal_lm`` / ``seq2seq`` from a Hugging Face model's config."""
    config = model.config
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    if getattr(config, "is_decoder", False):
        return "causal_lm"
    model_type = getattr(config, "model_type", "")
    if (
        model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    ):
        return "causal_lm"  # decoder-only families (gpt2, llama, ...)
    return "encoder"


def transformer_layers(body: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks (BERT ``encoder.layer``, GPT-2 ``h``, Llama ``layers``, ...):
    the longest ``nn.ModuleList`` in the body."""
    stacks = [m for m in body.modules() if isinstance(m, nn.ModuleList)]
    if not stacks:
        raise ValueError(f"{type(body).__name__} has no list of transformer layers to unfreeze")
    return max(stacks, key=len)


def _body(model: nn.Module) -> nn.Module:
    """The transformer without an LM head (``base_model`` is the model itself when it has none)."""
    return getattr(model, "base_model", model)


class TokenRewardModel(nn.Module):
    def __init__(
        self,
        backbone: nn.Module,
        kind: str | None = None,
        head_hidden: int = 2048,
        squash: str = "softplus",
        freeze_backbone: bool = False,
        init_gain: float = 1e-4,
        trainable_layers: int | None = None,
    ):
        super().__init__()
        kind = kind or backbone_kind(backbone)
        if kind == "masked_lm":
            kind = "encoder"
        if kind not in BACKBONE_KINDS:
            raise ValueError(f"unknown backbone kind {kind!r}; use one of {', '.join(BACKBONE_KINDS)}")
        if squash not in SQUASHES:
            raise ValueError(f"unknown squash {squash!r}; use one of {', '.join(SQUASHES)}")
        self.backbone = backbone
        self.kind = kind
        self.squash = squash
        self.head_hidden = head_hidden
        self.init_gain = init_gain
        hidden_size = self._token_body().config.hidden_size
        self.head = nn.Sequential(nn.Linear(hidden_size, head_hidden), nn.ReLU(), nn.Linear(head_hidden, 1))
        self.reset_head()
        self.freeze_backbone = freeze_backbone
        self.trainable_layers = trainable_layers
        self.spec: ModelSpec | None = None  # set by from_spec: lets save write a reference, not a copy
        self.tokenizer: transformers.PreTrainedTokenizerBase | None = None  # for token_rewards
        if freeze_backbone:
            self.backbone.requires_grad_(False)
            self.backbone.eval()
        elif trainable_layers is not None:
            layers = transformer_layers(self._token_body())
            if not 0 <= trainable_layers <= len(layers):
                raise ValueError(
                    f"trainable_layers must be between 0 and the backbone's {len(layers)} layers; "
                    f"got {trainable_layers}"
                )
            self.backbone.requires_grad_(False)
            for layer in list(layers)[len(layers) - trainable_layers :]:
                layer.requires_grad_(True)

    @classmethod
    def from_spec(
        cls, spec: ModelSpec, **kwargs
    ) -> tuple[transformers.PreTrainedTokenizerBase, TokenRewardModel]:
        """(tokenizer, reward model) on the backbone ``components.models.load_model(spec)``."""
        tokenizer, backbone = load_model(spec)
        kind = "encoder" if spec.kind == "masked_lm" else spec.kind
        model = cls(backbone, kind=kwargs.pop("kind", kind), **kwargs)
        model.spec, model.tokenizer = spec, tokenizer
        return tokenizer, model

    def reset_head(self) -> None:
        """Re-initialise the head: tiny Xavier gain, so all rewards start nearly equal."""
        for layer in self.head:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight, gain=self.init_gain)
                nn.init.constant_(layer.bias, -1e-4)

    def train(self, mode: bool = True) -> TokenRewardModel:
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    def _token_body(self) -> nn.Module:
        if self.kind == "seq2seq":
            return _body(self.backbone.get_decoder())
        return _body(self.backbone)

    def encode_source(self, source_ids: torch.Tensor, source_attention_mask: torch.Tensor) -> torch.Tensor:
        """Encoder states ``[N, S, H]`` for a seq2seq backbone (no grad when the backbone is frozen)."""
        if self.kind != "seq2seq":
            raise ValueError(f"encode_source needs a seq2seq backbone, this one is {self.kind}")
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
            states = self.backbone.get_encoder()(
                input_ids=source_ids, attention_mask=source_attention_mask
            ).last_hidden_state
            project = getattr(
                self.backbone, "enc_to_dec_proj", None
            )  # EncoderDecoderModel with unequal sizes
            return project(states) if project is not None else states

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        source_ids: torch.Tensor | None = None,
        source_attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Rewards ``[N, T]`` for generated tokens ``input_ids[N, T]``; exactly 0 at pads.

        ``source_ids[N, S]`` (or, for seq2seq, ``encoder_hidden_states[N, S, H]``) condition on
        the input; ``source_attention_mask`` marks its real tokens.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.token_hidden_states(
            input_ids, attention_mask, source_ids, source_attention_mask, encoder_hidden_states
        )
        return self.rewards_from_hidden(hidden, attention_mask)

    def token_hidden_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        source_ids: torch.Tensor | None = None,
        source_attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Backbone states ``[N, T, H]`` of the generated tokens (the part a frozen backbone
        makes constant, so trainers may cache it)."""
        if source_ids is not None and source_attention_mask is None:
            source_attention_mask = torch.ones_like(source_ids)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
            if self.kind == "seq2seq":
                return self._seq2seq_hidden(
                    input_ids, attention_mask, source_ids, source_attention_mask, encoder_hidden_states
                )
            if encoder_hidden_states is not None:
                raise ValueError(f"encoder_hidden_states needs a seq2seq backbone, this one is {self.kind}")
            return self._single_stack_hidden(input_ids, attention_mask, source_ids, source_attention_mask)

    def rewards_from_hidden(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Head and squash on backbone states ``[N, T, H]``; rewards ``[N, T]``, 0 at pads."""
        logits = self.head(hidden.to(self.head[0].weight.dtype)).squeeze(-1)
        if self.squash == "softplus":
            rewards = MIN_REWARD + F.softplus(1.0 - F.softplus(1.0 - logits))
        else:
            rewards = torch.sigmoid(logits)
        # where, not multiply: a NaN at a pad position must not survive either.
        return torch.where(attention_mask.bool(), rewards, torch.zeros_like(rewards))

    def _seq2seq_hidden(
        self, input_ids, attention_mask, source_ids, source_attention_mask, encoder_hidden_states
    ):
        if encoder_hidden_states is None:
            if source_ids is None:
                raise ValueError("a seq2seq reward model needs source_ids or encoder_hidden_states")
            encoder_hidden_states = self.encode_source(source_ids, source_attention_mask)
        if source_attention_mask is None:
            source_attention_mask = torch.ones(
                encoder_hidden_states.shape[:2], dtype=torch.long, device=encoder_hidden_states.device
            )
        start = self.backbone.config.decoder_start_token_id
        if start is None:
            raise ValueError(
                "the seq2seq backbone has no config.decoder_start_token_id; set it before scoring"
            )
        n = input_ids.shape[0]
        decoder_ids = torch.cat([input_ids.new_full((n, 1), start), input_ids], dim=1)
        decoder_mask = torch.cat([attention_mask.new_ones((n, 1)), attention_mask], dim=1)
        hidden = self._token_body()(
            input_ids=decoder_ids,
            attention_mask=decoder_mask,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=source_attention_mask,
            use_cache=False,
        ).last_hidden_state
        return hidden[:, 1:]  # position t+1 has read y_t and everything before it

    def _single_stack_hidden(self, input_ids, attention_mask, source_ids, source_attention_mask):
        kwargs = {"use_cache": False} if self.kind == "causal_lm" else {}
        if source_ids is None:
            return _body(self.backbone)(
                input_ids=input_ids, attention_mask=attention_mask, **kwargs
            ).last_hidden_state
        ids = torch.cat([source_ids, input_ids], dim=1)
        mask = torch.cat([source_attention_mask.to(attention_mask.dtype), attention_mask], dim=1)
        # Positions count real tokens only, so pads between source and candidate change nothing.
        positions = (mask.long().cumsum(1) - 1).clamp(min=0)
        hidden = _body(self.backbone)(
            input_ids=ids, attention_mask=mask, position_ids=positions, **kwargs
        ).last_hidden_state
        return hidden[:, source_ids.shape[1] :]

    def backbone_digest(self) -> str:
        """SHA-256 of the frozen weights the rewards read (the token body less its trained layers)."""
        return weights_sha256(self._token_body(), exclude=frozenset(self._trained_layer_weights()))

    def _trained_layer_weights(self) -> dict[str, torch.Tensor]:
        """The token body's weights that train while the rest stays frozen (trainable_layers=n)."""
        if self.freeze_backbone or self.trainable_layers is None:
            return {}
        return {n: p.detach().cpu() for n, p in self._token_body().named_parameters() if p.requires_grad}

    def _saves_reference(self) -> bool:
        # A seq2seq warm start gets random cross-attention on every load: no stable reference.
        partly_frozen = self.freeze_backbone or self.trainable_layers is not None
        return partly_frozen and self.spec is not None and self.kind != "seq2seq"

    def save(
        self, directory: str | Path, tokenizer: transformers.PreTrainedTokenizerBase | None = None
    ) -> Path:
        """Write head weights and settings; the backbone as a reference (frozen, from a spec) or with
        ``save_pretrained``; optionally the tokenizer."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        settings = {
            "backbone_class": type(self.backbone).__name__,
            "kind": self.kind,
            "head_hidden": self.head_hidden,
            "squash": self.squash,
            "freeze_backbone": self.freeze_backbone,
            "init_gain": self.init_gain,
            "trainable_layers": self.trainable_layers,
        }
        if self.spec is not None:
            settings["tokenizer_name"] = self.spec.name
        if self._saves_reference():
            settings["backbone_spec"] = asdict(self.spec)
            settings["backbone_sha256"] = self.backbone_digest()
            trained = self._trained_layer_weights()
            if trained:
                torch.save(trained, directory / TRAINED_LAYERS_FILE)
        else:
            self.backbone.save_pretrained(directory / "backbone")
        torch.save(self.head.state_dict(), directory / HEAD_FILE)
        (directory / CONFIG_FILE).write_text(json.dumps(settings, indent=2))
        if tokenizer is not None:
            tokenizer.save_pretrained(directory / TOKENIZER_DIR)
        return directory

    @classmethod
    def load(cls, directory: str | Path, freeze_backbone: bool | None = None) -> TokenRewardModel:
        """Rebuild a model written by ``save`` (eval mode), with its tokenizer when one is known (the
        saved ``tokenizer/`` folder, else the backbone spec's), so ``token_rewards`` works at once."""
        directory = Path(directory)
        config_path = directory / CONFIG_FILE
        if not config_path.exists():
            raise ValueError(
                f"{directory} has no {CONFIG_FILE}; point to a folder written by TokenRewardModel.save"
            )
        settings = json.loads(config_path.read_text())
        spec = ModelSpec(**settings["backbone_spec"]) if "backbone_spec" in settings else None
        if spec is not None:
            with _quiet_load_report():
                backbone = load_model(spec)[1]
        else:
            backbone_class = getattr(transformers, settings["backbone_class"], None)
            if backbone_class is None:
                raise ValueError(
                    f"transformers has no class {settings['backbone_class']}; upgrade transformers"
                )
            with _quiet_load_report():
                backbone = backbone_class.from_pretrained(directory / "backbone")
        model = cls(
            backbone,
            kind=settings["kind"],
            head_hidden=settings["head_hidden"],
            squash=settings["squash"],
            freeze_backbone=settings["freeze_backbone"] if freeze_backbone is None else freeze_backbone,
            init_gain=settings["init_gain"],
            trainable_layers=settings.get("trainable_layers"),
        )
        if spec is not None:
            trained = {}
            if (directory / TRAINED_LAYERS_FILE).is_file():
                trained = torch.load(directory / TRAINED_LAYERS_FILE, map_location="cpu", weights_only=True)
            found = weights_sha256(model._token_body(), exclude=frozenset(trained))
            if found != settings["backbone_sha256"]:
                raise ValueError(
                    f"{directory}: the base weights of {spec.name!r} ({spec.kind}) changed since this head "
                    f"was fitted (sha256 {found[:12]} != {settings['backbone_sha256'][:12]}); refit it"
                )
            model.spec = spec
            unexpected = model._token_body().load_state_dict(trained, strict=False).unexpected_keys
            if unexpected:
                raise ValueError(
                    f"{directory}: {TRAINED_LAYERS_FILE} has weights the backbone lacks ({unexpected[0]}); refit it"
                )
        model.head.load_state_dict(torch.load(directory / HEAD_FILE, map_location="cpu", weights_only=True))
        if (directory / TOKENIZER_DIR).is_dir():
            model.tokenizer = transformers.AutoTokenizer.from_pretrained(directory / TOKENIZER_DIR)
        elif "tokenizer_name" in settings:
            model.tokenizer = load_tokenizer(settings["tokenizer_name"])
        return model.eval()

    @torch.no_grad()
    def token_rewards(
        self, texts: list[str], sources: list[str] | None = None, max_length: int = 512
    ) -> list[list[tuple[str, float]]]:
        """(token, reward) for every token of each text (optionally after its source), one list per text."""
        if self.tokenizer is None:
            raise ValueError(
                "this model has no tokenizer; set model.tokenizer or save it with save(..., tokenizer)"
            )
        if sources is not None and len(sources) != len(texts):
            raise ValueError(f"got {len(texts)} texts but {len(sources)} sources")
        self.eval()
        device = next(self.parameters()).device
        out = []
        for i, text in enumerate(texts):
            ids = self.tokenizer(text, add_special_tokens=False, truncation=True, max_length=max_length)[
                "input_ids"
            ]
            if not ids:
                out.append([])
                continue
            input_ids = torch.tensor([ids], device=device)
            kwargs = {}
            if sources is not None and sources[i] is not None:
                source_ids = self.tokenizer(
                    sources[i], truncation=True, max_length=max_length, return_tensors="pt"
                )["input_ids"]
                kwargs["source_ids"] = source_ids.to(device)
            rewards = self(input_ids, torch.ones_like(input_ids), **kwargs)[0].cpu().tolist()
            out.append(list(zip(self.tokenizer.convert_ids_to_tokens(ids), rewards, strict=True)))
        return out


@contextmanager
def _quiet_load_report():
    """transformers' load report, silenced while a saved reward model is rebuilt: the base is an encoder
    checkpoint under an LM class whose LM head the reward model never reads, so its "missing keys" and
    "checkpoint seem corrupted" lines are false alarms on every load. The frozen weights the rewards do
    read are checked by sha256 instead."""
    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(level)
