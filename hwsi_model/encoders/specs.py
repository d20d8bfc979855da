"""What each registered encoder is: architecture family, input, normalisation, weights to fetch.

The pathology entries load ONLY from a local checkpoint given by the user (config
``embed.checkpoint``); nothing is ever downloaded. Each entry names the Hugging Face repository and
file to fetch by hand. Architectures and preprocessing follow the model cards and TRIDENT's loaders
(mahmoodlab/TRIDENT ``patch_encoder_models/load.py``); remaining doubts are in ``notes``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from hwsi_model.encoders.base import IMAGENET_MEAN, IMAGENET_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

HOPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
HOPTIMUS_STD = (0.211883, 0.230117, 0.177517)

FAMILIES = ("hf", "clip", "timm", "conch_v1", "conch_v1_5")


@dataclass(frozen=True)
class EncoderSpec:
    """One registry entry.

    Attributes:
        name: registry name, as given to :func:`~hwsi_model.encoders.load_encoder`.
        family: ``"hf"`` (transformers ``AutoModel`` folder), ``"clip"`` (a transformers
            ``CLIPModel`` folder: the image embedding of its image-text space, and a text tower
            for prompt queries), ``"timm"`` (timm architecture +
            state dict), ``"conch_v1"`` (open_clip-style CoCa vision tower: timm ViT-B/16 trunk +
            attentional pooler + projection) or ``"conch_v1_5"`` (TITAN's CONCH: timm ViT-L/16
            trunk + attentional pooler).
        embed_dim: ``D`` of the pooled embedding (``None``: read from the model).
        token_dim: width of the token map (``None``: read from the model, or no map for CNNs).
        input_size: side in px of the model input (``None``: read from the model).
        mean, std: RGB normalisation on 0..1 values (``None``: read from the model's own
            preprocessing config).
        precision: autocast hint on GPU: ``"bf16"`` for ViT-L and larger.
        needs_checkpoint: the weights must be given with ``checkpoint=``.
        hf_repo: Hugging Face repository to download the weights from (by hand).
        checkpoint_file: the file of ``hf_repo`` to download (a folder for ``hf`` entries).
        pooling: ``"cls"``, ``"cls+mean"`` (CLS concatenated with the mean patch token),
            ``"head"`` (the model's own pooling, e.g. timm's ``global_pool``), ``"pooler"``
            (transformers ``pooler_output``) or ``"attn_pool"`` (CONCH's attentional pooler).
        resize_size: resize to this side before a centre crop to ``input_size`` (``None``: none).
        interpolation: resize kernel (``"bilinear"`` or ``"bicubic"``, antialiased).
        arch: timm model name of the architecture (timm-based families).
        arch_kwargs: keyword arguments of ``timm.create_model``; string values ``"timm:<path>"``
            and ``"torch:<path>"`` name classes resolved when timm is imported.
        notes: provenance and doubts.
    """

    name: str
    family: str
    embed_dim: int | None = None
    token_dim: int | None = None
    input_size: int | None = None
    mean: tuple[float, float, float] | None = IMAGENET_MEAN
    std: tuple[float, float, float] | None = IMAGENET_STD
    precision: str = "fp32"
    needs_checkpoint: bool = True
    hf_repo: str | None = None
    checkpoint_file: str | None = None
    pooling: str = "cls"
    resize_size: int | None = None
    interpolation: str = "bilinear"
    arch: str | None = None
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for ``hwsi encoders`` listings and store attributes)."""
        d = asdict(self)
        d["mean"] = None if self.mean is None else list(self.mean)
        d["std"] = None if self.std is None else list(self.std)
        return d


_SWIGLU = {"mlp_layer": "timm:layers.SwiGLUPacked", "act_layer": "torch:nn.SiLU"}

_HOPTIMUS_0 = EncoderSpec(
    name="h-optimus-0",
    family="timm",
    embed_dim=1536,
    token_dim=1536,
    input_size=224,
    mean=HOPTIMUS_MEAN,
    std=HOPTIMUS_STD,
    precision="bf16",
    hf_repo="bioptimus/H-optimus-0",
    checkpoint_file="pytorch_model.bin",
    pooling="cls",
    arch="vit_giant_patch14_reg4_dinov2",
    arch_kwargs={
        "img_size": 224,
        "num_classes": 0,
        "global_pool": "token",
        "init_values": 1e-5,
        "dynamic_img_size": True,
    },
    notes=(
        "H-optimus-0: ViT-g/14 with 4 registers (1.1B); CLS token; 16 x 16 grid. The repo "
        "may ship model.safetensors instead of pytorch_model.bin: either works. TRIDENT: fp16."
    ),
)

NAMED_SPECS: tuple[EncoderSpec, ...] = (
    EncoderSpec(
        name="tiny-vit",
        family="hf",
        mean=None,
        std=None,
        precision="fp32",
        hf_repo=None,
        checkpoint_file=None,
        notes=(
            "Tiny random ViT for tests and the demo: build it with "
            "hwsi_model.demo.tiny_encoder.build_tiny_encoder(folder) and pass the folder."
        ),
    ),
    EncoderSpec(
        name="hf",
        family="hf",
        mean=None,
        std=None,
        precision="bf16",
        notes=(
            "Any transformers vision model folder whose output has last_hidden_state "
            "(ViT, DINOv2, DINOv2 with registers, Phikon, Hibou...). Pooled = CLS token; input "
            "size and mean/std from preprocessor_config.json when present (else config.image_size, "
            "ImageNet). Use bf16 for ViT-L and larger."
        ),
    ),
    EncoderSpec(
        name="clip",
        family="clip",
        mean=None,
        std=None,
        precision="fp32",
        notes=(
            "Any transformers CLIPModel folder (OpenAI CLIP, or a pathology CLIP such as PLIP or "
            "QuiltNet converted to transformers). Pooled = the image embedding of the shared "
            "image-text space (visual_projection of the vision tower's pooled output); tokens = "
            "the vision tower's patch tokens; its text tower embeds the selection's prompt bank "
            "(embed.selection.query: prompts). Mean/std and size from preprocessor_config.json."
        ),
    ),
    EncoderSpec(
        name="plip",
        family="clip",
        input_size=224,
        mean=OPENAI_CLIP_MEAN,
        std=OPENAI_CLIP_STD,
        precision="fp32",
        hf_repo="vinid/plip",
        checkpoint_file=".",
        notes=(
            "PLIP (Huang et al., Nat Med 2023): CLIP ViT-B/32 fine-tuned on OpenPath (Twitter "
            "pathology image-text pairs); 512-d image-text space at 224 px. A transformers "
            "CLIPModel folder: fetch the whole repository. Its text tower scores patches "
            "against the prompt bank (embed.selection.query: prompts)."
        ),
    ),
    EncoderSpec(
        name="conch_v1",
        family="conch_v1",
        embed_dim=512,
        token_dim=768,
        input_size=448,
        mean=OPENAI_CLIP_MEAN,
        std=OPENAI_CLIP_STD,
        precision="bf16",
        hf_repo="MahmoodLab/CONCH",
        checkpoint_file="pytorch_model.bin",
        pooling="attn_pool",
        interpolation="bicubic",
        arch="vit_base_patch16_224",
        arch_kwargs={"img_size": 448, "num_classes": 0, "dynamic_img_size": True},
        notes=(
            "CoCa ViT-B/16 at 448 px (conch_ViT-B-16). Pooled = the contrastive image embedding "
            "(attentional pooler -> LayerNorm -> proj_contrast, i.e. encode_image(proj_contrast="
            "True, normalize=False)), which lives in CONCH's text space, as the 'prompts' "
            "selection query needs; TRIDENT's default (proj_contrast=False) is the 512-d vector "
            "before the projection. Token map: 28 x 28 trunk tokens (768). TRIDENT runs it fp32."
        ),
    ),
    EncoderSpec(
        name="conch_v1_5",
        family="conch_v1_5",
        embed_dim=768,
        token_dim=1024,
        input_size=448,
        precision="bf16",
        hf_repo="MahmoodLab/conchv1_5",
        checkpoint_file="pytorch_model_vision.bin",
        pooling="attn_pool",
        arch="vit_large_patch16_224",
        arch_kwargs={
            "img_size": 448,
            "patch_size": 16,
            "init_values": 1.0,
            "num_classes": 0,
            "dynamic_img_size": True,
        },
        notes=(
            "TITAN's patch encoder: ViT-L/16 (iBOT) trunk at 448 px + attentional pooler (1 query) "
            "+ LayerNorm -> 768-d, as TRIDENT's conch_v15 (positional embedding resampled "
            "bilinearly to the 28 x 28 grid). Vision tower only: no text side, so 'prompts' "
            "selection needs CONCH v1 (or TITAN's text encoder) instead. ImageNet mean/std."
        ),
    ),
    EncoderSpec(
        name="uni",
        family="timm",
        embed_dim=1024,
        token_dim=1024,
        input_size=224,
        precision="bf16",
        hf_repo="MahmoodLab/UNI",
        checkpoint_file="pytorch_model.bin",
        pooling="cls",
        arch="vit_large_patch16_224",
        arch_kwargs={
            "img_size": 224,
            "patch_size": 16,
            "init_values": 1e-5,
            "num_classes": 0,
            "dynamic_img_size": True,
        },
        notes="UNI (v1): ViT-L/16, DINOv2-trained; CLS token, 14 x 14 token grid. fp16 in TRIDENT.",
    ),
    EncoderSpec(
        name="uni2-h",
        family="timm",
        embed_dim=1536,
        token_dim=1536,
        input_size=224,
        precision="bf16",
        hf_repo="MahmoodLab/UNI2-h",
        checkpoint_file="pytorch_model.bin",
        pooling="cls",
        arch="vit_giant_patch14_224",
        arch_kwargs={
            "img_size": 224,
            "patch_size": 14,
            "depth": 24,
            "num_heads": 24,
            "init_values": 1e-5,
            "embed_dim": 1536,
            "mlp_ratio": 2.66667 * 2,
            "num_classes": 0,
            "no_embed_class": True,
            "reg_tokens": 8,
            "dynamic_img_size": True,
            **_SWIGLU,
        },
        notes=(
            "UNI2-h: ViT-H/14-shaped (24 blocks, 1536 wide, SwiGLU) with 8 register tokens; CLS "
            "token; 16 x 16 token grid. bf16 as in TRIDENT (fp16 may overflow)."
        ),
    ),
    EncoderSpec(
        name="virchow2",
        family="timm",
        embed_dim=2560,
        token_dim=1280,
        input_size=224,
        precision="bf16",
        hf_repo="paige-ai/Virchow2",
        checkpoint_file="pytorch_model.bin",
        pooling="cls+mean",
        interpolation="bicubic",
        arch="vit_huge_patch14_224",
        arch_kwargs={
            "img_size": 224,
            "init_values": 1e-5,
            "num_classes": 0,
            "reg_tokens": 4,
            "mlp_ratio": 5.3375,
            "global_pool": "",
            "dynamic_img_size": True,
            **_SWIGLU,
        },
        notes=(
            "Virchow2: ViT-H/14 with 4 register tokens, SwiGLU; embedding = CLS concatenated with "
            "the mean of the 256 patch tokens (registers excluded) = 2560-d, as the model card. "
            "Trained at 0.5/1/2 mpp mixtures; 16 x 16 token grid."
        ),
    ),
    _HOPTIMUS_0,
    # Same architecture and normalisation as H-optimus-0 (per TRIDENT); the mean/std are
    # assumed unchanged.
    replace(
        _HOPTIMUS_0,
        name="h-optimus-1",
        hf_repo="bioptimus/H-optimus-1",
        notes="H-optimus-1: as H-optimus-0; mean/std assumed unchanged from H-optimus-0.",
    ),
    EncoderSpec(
        name="prov-gigapath",
        family="timm",
        embed_dim=1536,
        token_dim=1536,
        input_size=224,
        precision="bf16",
        hf_repo="prov-gigapath/prov-gigapath",
        checkpoint_file="pytorch_model.bin",
        pooling="cls",
        resize_size=256,
        interpolation="bicubic",
        arch="vit_giant_patch14_dinov2",
        arch_kwargs={
            "img_size": 224,
            "in_chans": 3,
            "patch_size": 16,
            "embed_dim": 1536,
            "depth": 40,
            "num_heads": 24,
            "mlp_ratio": 5.33334,
            "num_classes": 0,
            "dynamic_img_size": True,
        },
        notes=(
            "Prov-GigaPath tile encoder: ViT-g with 16 px patches; CLS token; 14 x 14 grid. "
            "Official transform: resize 256 (bicubic) then centre crop 224, reproduced here."
        ),
    ),
)

ALIASES: dict[str, str] = {
    # TRIDENT's names, so that its users can keep theirs.
    "conch": "conch_v1",
    "conch_v15": "conch_v1_5",
    "conchv1_5": "conch_v1_5",
    "uni_v1": "uni",
    "uni_v2": "uni2-h",
    "uni2": "uni2-h",
    "gigapath": "prov-gigapath",
    "hoptimus0": "h-optimus-0",
    "hoptimus1": "h-optimus-1",
}


def timm_spec(model_name: str) -> EncoderSpec:
    """The spec of ``timm:<model_name>``: any timm architecture with a local checkpoint file."""
    return EncoderSpec(
        name=f"timm:{model_name}",
        family="timm",
        mean=None,
        std=None,
        precision="bf16",
        pooling="head",
        arch=model_name,
        arch_kwargs={"num_classes": 0},
        notes=(
            "Generic timm model by name; weights from a local state-dict file (.safetensors/.bin/"
            ".pth); checkpoint='random' builds random weights (benchmarks only). Input size and "
            "mean/std from timm's pretrained config of the name; pooled = the model's own head "
            "pooling (global_pool); token map for ViTs, none for CNNs."
        ),
    )
