"""The MLLM-HWSI model: the visual hierarchy + a Hugging Face causal LM (+ a text encoder).

One :class:`HWSIModel` serves all three stages:

- stage 1 (:meth:`HWSIModel.alignment_losses`): L_HC + L_CS between the visual scales in the
  alignment space and the report's text views from the text encoder; no LLM needed.
- stages 2-3 (:meth:`HWSIModel.forward`): the projected per-scale token groups (WSI, regions,
  selected patches, cellular tokens), each with its scale-type embedding, replace the placeholder
  (``<image>``) of a chat-template prompt; L_LM on the answer tokens, plus (when text views are
  given) L_HC + L_CS in the LLM's hidden size against the LLM's own token embeddings of the views,
  so the auxiliary losses train the LLM projectors even with a frozen LLM.

Baselines (``config.visual_input``): ``"flat"`` gives the LLM a single token, the mean of all the
slide's patch embeddings through :attr:`HWSIModel.flat_projector` (no cell or region scale);
``"flat_cells"`` the same token from the mean patch embedding concatenated with the mean cell
embedding of the selected patches (pooled encoder features + morphometrics), so that "hierarchy
beats flat" is not "cell features beat none"; ``"none"`` gives it no visual token (text only).
All train in stages 2-3 like the method.

The LLM and text encoder load from local folders only. Prompt layout and tokenisation are the
processor's (:mod:`~hwsi_model.model.processor`); the model folder on disk is the checkpoint
module's (:mod:`~hwsi_model.model.checkpoint`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from hwsi_model.devices import resolve_llm_dtype
from hwsi_model.model.batch import SlideBatch
from hwsi_model.model.configuration import SCALES, HWSIConfig
from hwsi_model.model.hierarchy import HierarchicalVisualEncoder, UnitEmbeddings, VisualOutput
from hwsi_model.model.losses import (
    HierarchicalContrastiveLoss,
    causal_lm_loss,
    combine_losses,
    cross_scale_consistency,
)
from hwsi_model.model.processor import IGNORE_INDEX, HWSIProcessor
from hwsi_model.model.projectors import ScaleProjector
from hwsi_model.model.resampler import Resampler
from hwsi_model.model.text_encoder import TextEncoder, encode_views
from hwsi_model.model.text_views import TextViews

log = logging.getLogger(__name__)


@dataclass
class HWSIOutput:
    """Losses (scalars, ``None`` when not computed) and, for LLM passes, logits and labels.

    ``logits [B, T, V]``, ``labels [B, T]`` and ``attention_mask [B, T]`` are those of the
    spliced sequence (text + visual tokens); ``hc_parts`` holds L_HC per scale.
    """

    loss: Tensor
    lm_loss: Tensor | None = None
    hc_loss: Tensor | None = None
    cs_loss: Tensor | None = None
    hc_parts: dict[str, Tensor] | None = None
    logits: Tensor | None = None
    labels: Tensor | None = None
    attention_mask: Tensor | None = None


def plan_visual_tokens(
    region_mask: Tensor, patch_mask: Tensor, scales: Sequence[str], cap: int
) -> tuple[Tensor, Tensor]:
    """Which regions and selected-patch slots of one slide become LLM tokens under ``cap``.

    Args:
        region_mask: ``[R] bool``; patch_mask: ``[R, K] bool`` (slots in ``selected`` order,
            i.e. by relevance rank within each region).
        scales: the groups sent (the WSI group is one token).
        cap: maximum number of visual tokens.

    Returns:
        ``(regions, slots)``: int64 indices of the kept regions (into R) and kept slots (into
        ``R * K``, shared by the patch and cell groups), in ascending order. When everything fits,
        all are kept; otherwise regions get at least a third of the budget (evenly spaced over the
        slide) and slots are taken rank by rank across regions (every region's best patch first).
    """
    R, K = patch_mask.shape
    regions = region_mask.nonzero().flatten()
    slots = patch_mask.flatten().nonzero().flatten()
    n_slot_groups = sum(s in scales for s in ("patch", "cell"))
    if "region" not in scales:
        regions = regions[:0]
    if n_slot_groups == 0:
        slots = slots[:0]
    budget = cap - int("wsi" in scales)
    n_r, n_s = len(regions), len(slots)
    if n_r + n_slot_groups * n_s <= budget:
        return regions, slots
    keep_r = min(n_r, budget // 3) if n_slot_groups else min(n_r, budget)
    keep_s = min(n_s, (budget - keep_r) // n_slot_groups) if n_slot_groups else 0
    keep_r = min(n_r, budget - n_slot_groups * keep_s)
    if keep_r > 0:
        pick = torch.linspace(0, n_r - 1, keep_r).round().long()
        regions = regions[pick]
    else:
        regions = regions[:0]
    rank_major = (slots % K) * R + slots // K
    slots = slots[torch.argsort(rank_major)[:keep_s]].sort().values
    return regions, slots


class HWSIModel(nn.Module):
    """Visual hierarchy + (optional) causal LM + (optional) text encoder.

    Args:
        config: the model configuration; ``visual.projector.llm_hidden_size`` and ``text_dim``
            are filled in from ``llm`` and ``text_encoder`` when left ``None``.
        llm: a Hugging Face causal LM (or ``None`` for stage 1 only).
        tokenizer: its tokenizer (required with ``llm``).
        text_encoder: a :class:`TextEncoder` for stage 1 and the evidence maps.
    """

    def __init__(
        self,
        config: HWSIConfig,
        llm: nn.Module | None = None,
        tokenizer=None,
        text_encoder: TextEncoder | None = None,
    ):
        super().__init__()
        self.config = config
        pc = config.visual.projector
        if llm is not None:
            if tokenizer is None:
                raise ValueError("an LLM needs its tokenizer")
            hidden = int(llm.config.get_text_config().hidden_size)
            if pc.llm_hidden_size is None:
                pc.llm_hidden_size = hidden
            elif pc.llm_hidden_size != hidden:
                raise ValueError(f"llm_hidden_size {pc.llm_hidden_size} != LLM width {hidden}")
        if text_encoder is not None:
            if pc.text_dim is None:
                pc.text_dim = text_encoder.hidden_size
            elif pc.text_dim != text_encoder.hidden_size:
                raise ValueError(f"text_dim {pc.text_dim} != encoder {text_encoder.hidden_size}")
        self.visual = HierarchicalVisualEncoder(config.visual)
        self.hc_align = HierarchicalContrastiveLoss(config.loss)  # stage 1 temperatures
        self.hc_llm = HierarchicalContrastiveLoss(config.loss)  # stages 2-3 temperatures
        self.resamplers: nn.ModuleDict | None = None
        if config.resampler is not None and pc.llm_hidden_size:
            self.resamplers = nn.ModuleDict(
                {
                    s: Resampler(config.resampler, pc.llm_hidden_size)
                    for s in config.llm_scales
                    if s != "wsi"
                }
            )
        self.flat_projector: ScaleProjector | None = None
        if config.visual_input in ("flat", "flat_cells") and pc.llm_hidden_size:
            d_in = config.visual.patch_dim
            d_in += config.visual.cell_dim if config.visual_input == "flat_cells" else 0
            self.flat_projector = ScaleProjector(d_in, pc.llm_hidden_size)
        self.llm = llm
        self.text_encoder = text_encoder
        self.processor: HWSIProcessor | None = None
        if tokenizer is not None:
            self.processor = HWSIProcessor(tokenizer, config.placeholder, config.system_prompt)

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: HWSIConfig, apply_lora: bool = True) -> HWSIModel:
        """Build a fresh model, loading the LLM and text encoder from the configured folders."""
        llm = tokenizer = text_encoder = None
        if config.llm_path:
            llm, tokenizer = load_llm(config.llm_path, config.llm_dtype)
        if config.text_encoder_path:
            text_encoder = TextEncoder(
                config.text_encoder_path, config.text_pooling, config.text_max_length
            )
        model = cls(config, llm, tokenizer, text_encoder)
        if apply_lora and config.lora is not None and llm is not None:
            model.apply_lora()
        return model

    def apply_lora(self) -> None:
        """Wrap the LLM with LoRA adapters (``config.lora``); needs ``peft``."""
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("LoRA needs the 'peft' package: pip install peft") from exc
        if self.llm is None:
            raise RuntimeError("no LLM to apply LoRA to")
        s = self.config.lora
        if s is None:
            raise ValueError("config.lora is not set")
        lora = LoraConfig(
            r=s.r,
            lora_alpha=s.alpha,
            lora_dropout=s.dropout,
            target_modules=list(s.target_modules),
            task_type="CAUSAL_LM",
        )
        self.llm = get_peft_model(self.llm, lora)

    @property
    def device(self) -> torch.device:
        """Where the model's weights are (inputs are moved there)."""
        return next(self.parameters()).device

    @property
    def is_lora(self) -> bool:
        return self.llm is not None and hasattr(self.llm, "peft_config")

    def set_llm_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute the LLM's decoder layers in the backward pass (less activation memory for
        long visual + text sequences, about a third more compute). Non-reentrant, so that LoRA
        adapters get gradients even when no input of a layer requires one (text only)."""
        if self.llm is None:
            return
        base = self.llm.get_base_model() if self.is_lora else self.llm
        if enabled:
            base.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
            base.config.use_cache = False  # a cache is useless when training, and conflicts
        else:
            base.gradient_checkpointing_disable()

    @property
    def tokenizer(self):
        """The LLM's tokenizer (the processor's), or ``None`` without an LLM."""
        return self.processor.tokenizer if self.processor is not None else None

    def _require_llm(self) -> HWSIProcessor:
        if self.llm is None or self.processor is None:
            raise RuntimeError("this model has no LLM (set config.llm_path)")
        return self.processor

    # -- visual tokens for the LLM ---------------------------------------------------------

    def visual_tokens(self, out: VisualOutput) -> list[Tensor]:
        """Per slide, the LLM-space visual tokens ``[V_b, H_llm]`` in group order
        (``config.llm_scales``: WSI, regions, selected patches, cellular tokens by default), each
        group with its scale-type embedding, at most ``config.max_visual_tokens`` per slide.
        """
        scales = self.config.llm_scales
        B = out.wsi_token.shape[0]
        if self.resamplers is not None:
            groups = self.visual.to_llm(out, list(scales), add_scale_embedding=False)
            pieces = []
            for s in scales:
                g = groups[s].emb
                if s != "wsi":
                    g = self.resamplers[s](g, groups[s].mask)
                # Through the projector's forward (not its table read here): ZeRO-3 gathers a
                # module's weights only while its forward runs.
                pieces.append(
                    self.visual.llm_projectors(s, g, add_scale_embedding=True, project=False)
                )
            merged = torch.cat(pieces, dim=1)
            return [merged[b] for b in range(B)]
        groups = self.visual.to_llm(out, list(scales), add_scale_embedding=True)
        result = []
        for b in range(B):
            regions, slots = plan_visual_tokens(
                out.region_mask[b], out.patch_mask[b], scales, self.config.max_visual_tokens
            )
            pieces = []
            for s in scales:
                if s == "wsi":
                    pieces.append(groups[s].emb[b])
                elif s == "region":
                    pieces.append(groups[s].emb[b, regions])
                else:
                    pieces.append(groups[s].emb[b, slots])
            result.append(torch.cat(pieces))
        return result

    def llm_visual_inputs(self, batch: SlideBatch) -> tuple[list[Tensor], VisualOutput | None]:
        """Per slide the LLM-space visual tokens ``[V_b, H_llm]`` for ``config.visual_input``,
        and the hierarchy's output (``None`` for the baselines, which do not run it)."""
        mode = self.config.visual_input
        if mode == "hierarchy":
            out = self.visual(batch)
            return self.visual_tokens(out), out
        H = self.config.visual.projector.llm_hidden_size
        if mode == "none":
            return [batch.patch_emb.new_zeros(0, H) for _ in range(batch.batch_size)], None
        if self.flat_projector is None:
            raise RuntimeError("the flat baseline needs an LLM (its projector maps into it)")
        m = batch.patch_mask.unsqueeze(-1).float()
        mean = (batch.patch_emb.float() * m).sum(1) / m.sum(1).clamp(min=1.0)  # [B, D_p]
        if mode == "flat_cells":  # + the mean over every cell of the selected patches
            c = batch.cell_mask.flatten(1, 3).unsqueeze(-1).float()  # [B, R*K*L, 1]
            cells = batch.cell_emb.flatten(1, 3).float()  # [B, R*K*L, D_c]
            cell_mean = (cells * c).sum(1) / c.sum(1).clamp(min=1.0)  # [B, D_c]; 0: no cell
            mean = torch.cat([mean, cell_mean], dim=-1)
        tokens = self.flat_projector(mean)  # [B, H]
        return [tokens[b : b + 1] for b in range(batch.batch_size)], None

    def build_inputs(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        visual: list[Tensor],
        labels: Tensor | None = None,
        padding_side: str = "right",
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Splice each slide's visual tokens in at its placeholder.

        Args:
            input_ids, attention_mask: ``[B, T]`` (either padding side).
            visual: per slide ``[V_b, H]``.
            labels: ``[B, T]`` or ``None``; visual positions get -100.
            padding_side: padding of the result (``"left"`` for generation).

        Returns:
            ``inputs_embeds [B, T', H]`` (LLM dtype), ``attention_mask [B, T'] int64``, labels.
        """
        embed = self.llm.get_input_embeddings()
        proc = self._require_llm()
        is_ph = input_ids == proc.placeholder_id
        text = embed(input_ids.masked_fill(is_ph, proc.pad_token_id))
        seqs, labs = [], []
        for b in range(input_ids.shape[0]):
            keep = attention_mask[b].bool()
            pos = is_ph[b][keep].nonzero().flatten()
            if len(pos) != 1:
                raise ValueError(f"sequence {b} must contain the placeholder exactly once")
            p = int(pos[0])
            t = text[b][keep]
            v = visual[b].to(t.dtype)
            seqs.append(torch.cat([t[:p], v, t[p + 1 :]]))
            if labels is not None:
                lb = labels[b][keep]
                fill = lb.new_full((len(v),), IGNORE_INDEX)
                labs.append(torch.cat([lb[:p], fill, lb[p + 1 :]]))
        T = max(len(s) for s in seqs)
        H = text.shape[-1]
        embeds = text.new_zeros(len(seqs), T, H)
        mask = torch.zeros(len(seqs), T, dtype=torch.long, device=text.device)
        out_labels = None
        if labels is not None:
            out_labels = torch.full((len(seqs), T), IGNORE_INDEX, device=labels.device)
        for b, s in enumerate(seqs):
            sl = slice(0, len(s)) if padding_side == "right" else slice(T - len(s), T)
            embeds[b, sl] = s
            mask[b, sl] = 1
            if out_labels is not None:
                out_labels[b, sl] = labs[b]
        return embeds, mask, out_labels

    # -- losses ----------------------------------------------------------------------------

    def embed_text_views_llm(self, views: Sequence[TextViews]) -> dict[str, UnitEmbeddings]:
        """Text views in the LLM's hidden size: mean of the LLM's input embeddings per text."""
        tok = self._require_llm().tokenizer
        embed = self.llm.get_input_embeddings()

        def encode(texts: list[str]) -> Tensor:
            device = embed.weight.device
            if not texts:
                return embed.weight.new_zeros(0, embed.weight.shape[1]).float()
            t = tok(texts, add_special_tokens=False, padding=True, return_tensors="pt").to(device)
            m = t["attention_mask"][..., None].float()
            return (embed(t["input_ids"]).float() * m).sum(1) / m.sum(1).clamp(min=1.0)

        return encode_views(encode, views)

    def encode_text_views(self, views: Sequence[TextViews]) -> dict[str, UnitEmbeddings]:
        """Text views through the text encoder: per scale raw ``[B, T, D_t]`` with masks."""
        if self.text_encoder is None:
            raise RuntimeError("no text encoder (set config.text_encoder_path)")
        return self.text_encoder.encode_views(views)

    def alignment_losses(
        self,
        batch: SlideBatch,
        views: Sequence[TextViews] | None = None,
        text: dict[str, UnitEmbeddings] | None = None,
    ) -> HWSIOutput:
        """Stage 1: L_HC + L_CS in the alignment space.

        Give either ``views`` (encoded here by the text encoder) or ``text``: per scale raw
        text-encoder embeddings ``[B, T, D_t]`` with masks (e.g. precomputed once per report).
        """
        if text is None:
            if views is None:
                raise ValueError("give views or text")
            text = self.encode_text_views(views)
        out = self.visual(batch)
        vis = self.visual.align(out)
        txt = {s: UnitEmbeddings(self.visual.embed_text(u.emb), u.mask) for s, u in text.items()}
        hc, parts = self.hc_align(vis, txt)
        cs = cross_scale_consistency(vis)
        loss = combine_losses(self.config.loss, hc=hc, cs=cs)
        return HWSIOutput(loss=loss, hc_loss=hc, cs_loss=cs, hc_parts=parts)

    def forward(
        self,
        batch: SlideBatch,
        input_ids: Tensor,
        attention_mask: Tensor,
        labels: Tensor | None = None,
        views: Sequence[TextViews] | None = None,
    ) -> HWSIOutput:
        """Stages 2-3: the LLM pass with visual tokens; L_LM on the answer tokens.

        Args:
            batch: the slides.
            input_ids, attention_mask, labels: from :meth:`tokenize` (``[B, T]``).
            views: text views of the slides' reports; when given (and weighted), L_HC + L_CS are
                added in the LLM hidden size.
        """
        self._require_llm()
        visual, out = self.llm_visual_inputs(batch)
        embeds, mask, labels = self.build_inputs(input_ids, attention_mask, visual, labels)
        logits = self.llm(inputs_embeds=embeds, attention_mask=mask).logits
        lm = causal_lm_loss(logits, labels) if labels is not None else None
        hc = cs = None
        parts = None
        cfg = self.config.loss
        if views is not None and out is not None and (cfg.hc_weight or cfg.cs_weight):
            vis = self.visual.to_llm(out, list(SCALES), add_scale_embedding=False)
            vis = {s: UnitEmbeddings(F.normalize(u.emb, dim=-1), u.mask) for s, u in vis.items()}
            txt = self.embed_text_views_llm(views)
            txt = {s: UnitEmbeddings(F.normalize(u.emb, dim=-1), u.mask) for s, u in txt.items()}
            hc, parts = self.hc_llm(vis, txt)
            cs = cross_scale_consistency(vis)
        if lm is None and hc is None:
            raise ValueError("nothing to optimise: give labels or views")
        loss = combine_losses(cfg, lm=lm, hc=hc, cs=cs)
        return HWSIOutput(
            loss=loss,
            lm_loss=lm,
            hc_loss=hc,
            cs_loss=cs,
            hc_parts=parts,
            logits=logits,
            labels=labels,
            attention_mask=mask,
        )

    @torch.no_grad()
    def generate(
        self,
        batch: SlideBatch,
        questions: Sequence[str],
        max_new_tokens: int = 128,
        histories: Sequence[Sequence[tuple[str, str]]] | None = None,
        **kwargs,
    ) -> list[str]:
        """Answer one question per slide (after its conversation's earlier turns, ``histories``);
        greedy by default (pass ``num_beams`` for beam search)."""
        proc = self._require_llm()
        device = self.device
        enc = {k: v.to(device) for k, v in proc(questions, histories=histories).items()}
        visual, _ = self.llm_visual_inputs(batch.to(device))
        embeds, mask, _ = self.build_inputs(
            enc["input_ids"], enc["attention_mask"], visual, padding_side="left"
        )
        kwargs.setdefault("do_sample", False)
        ids = self.llm.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            pad_token_id=proc.pad_token_id,
            eos_token_id=proc.eos_token_id,
            **kwargs,
        )
        return proc.decode(ids)

    def non_llm_state_dict(self) -> dict[str, Tensor]:
        """All weights except the LLM's and the text encoder's (which load from their folders)."""
        return {
            k: v.detach().contiguous().cpu()
            for k, v in self.state_dict().items()
            if not k.startswith(("llm.", "text_encoder."))
        }


def load_llm(path: str | Path, dtype: str = "auto"):
    """Load a causal LM and its tokenizer from a local folder (never from the hub), its weights
    in ``dtype`` (``auto``: :func:`hwsi_model.devices.resolve_llm_dtype`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = resolve_llm_dtype(dtype)

    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    llm = AutoModelForCausalLM.from_pretrained(
        str(path), local_files_only=True, dtype=getattr(torch, dtype)
    )
    log.info("loaded LLM %s (%s)", path, dtype)
    return llm, tokenizer
