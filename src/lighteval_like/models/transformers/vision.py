"""Images for the transformers backend: a vision-language model's prompts as token ids with
image spans, each distinct image prepared, processed and encoded once.

A prompt's images are digests into the encoder's media store. Each is decoded and prepared as
lmms-eval 0.7.3 prepares it (`image_pipeline`): `chat` (its qwen2_5_vl chat class) resizes to
multiples of 28 within qwen-vl-utils' default pixel range, `simple` (its --force_simple class)
re-encodes as JPEG quality 85 and resizes within `min_pixels`..`max_pixels`; then the model's own
image processor (given the same pixel range) makes the pixel values. The chat template renders
one placeholder token per image; the encoder widens it to the image's token count, as the
family's processor does, and records the span (start, end, digest) so prefixes are shared per
image, and the runner knows where an image's features go.

A family adapter (`VisionFamily`) knows the rest: the placeholder, the token count, the feature
forward and, for Qwen-VL, the multimodal rotary positions (`rope`).
"""

from __future__ import annotations

import io
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch

from lighteval_like.api.errors import LightevalLikeError, ModelLoadError, one_line
from lighteval_like.api.prompt import Prompt
from lighteval_like.api.requests import LoglikelihoodRequest
from lighteval_like.models.packing import ScoreItem
from lighteval_like.models.prompt_encoder import TokenizerEncoder

FACTOR = 28  # Qwen-VL: 14-pixel patches merged 2 x 2
CHAT_PIXELS = (4 * FACTOR**2, 16384 * FACTOR**2)  # qwen-vl-utils' defaults, which lmms-eval's chat class keeps
JPEG_QUALITY = 85


@dataclass(frozen=True)
class ImageInputs:
    """One image as the model reads it."""

    pixel_values: torch.Tensor | None  # None: the shape alone (`VisionEncoder.image_shape`)
    grid: tuple[int, int, int] | None  # Qwen-VL's (t, h, w) patch grid
    tokens: int  # placeholder tokens the image takes in the prompt
    size: tuple[int, int]  # (width, height) as stored


def fit_pixels(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(height, width): multiples of `factor` nearest the image's, scaled into the pixel range
    with the aspect ratio kept (Qwen-VL's resizing rule)."""
    h, w = max(factor, round(height / factor) * factor), max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h, w = max(factor, math.floor(height / beta / factor) * factor), max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


def _rgb(image):
    """RGB, a transparent background made white (as qwen-vl-utils does)."""
    from PIL import Image

    if image.mode == "RGBA":
        white = Image.new("RGB", image.size, (255, 255, 255))
        white.paste(image, mask=image.split()[3])
        return white
    return image.convert("RGB")


def prepare_image(data: bytes, pipeline: str, min_pixels: int, max_pixels: int, resize: bool = True):
    """The decoded image as lmms-eval's `pipeline` hands it to the processor (see the module doc)."""
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.load()
    image = image.convert("RGB")  # the tasks' doc_to_visual
    if pipeline == "simple":
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=JPEG_QUALITY)
        image = Image.open(io.BytesIO(out.getvalue()))
    else:
        min_pixels, max_pixels = CHAT_PIXELS
    image = _rgb(image)
    if not resize:
        return image
    height, width = fit_pixels(image.height, image.width, FACTOR, min_pixels, max_pixels)
    return image.resize((width, height))


class VisionFamily(ABC):
    """What differs between image+text model families."""

    placeholder: str  # the token the chat template writes for an image

    @abstractmethod
    def inputs(self, processor, image, size: tuple[int, int]) -> ImageInputs:
        """The processor's pixel values (and grid) of a prepared image."""

    def grid(self, processor, prepared: tuple[int, int]) -> tuple[int, int, int] | None:
        """The patch grid of an image prepared to (height, width), before any pixel is processed."""
        return None

    @abstractmethod
    def features(self, model, inputs: ImageInputs) -> torch.Tensor:
        """The image's embeddings [tokens, hidden], in the text tower's input space."""

    def rope(self, model, ids: list[int], spans: list[tuple[int, int, ImageInputs]]) -> tuple[torch.Tensor, int] | None:
        """Rotary positions [3, len(ids)] and the shift of the positions after them (None: 0..n-1)."""
        return None

    def fixed_tokens(self, config) -> int:
        """Tokens every image takes, where the model config fixes them (0: each image's grid says)."""
        return 0


class QwenVL(VisionFamily):
    placeholder = "<|image_pad|>"

    def inputs(self, processor, image, size) -> ImageInputs:
        out = processor(images=[image], return_tensors="pt")
        grid = tuple(int(x) for x in out["image_grid_thw"][0])
        merge = getattr(processor, "merge_size", 2)
        return ImageInputs(out["pixel_values"], grid, grid[0] * grid[1] * grid[2] // merge**2, size)

    def grid(self, processor, prepared):
        """The processor's own resize (its pixel range: `size`'s shortest_edge..longest_edge) in patches."""
        patch = getattr(processor, "patch_size", FACTOR // 2)
        factor = patch * getattr(processor, "merge_size", 2)
        height, width = fit_pixels(*prepared, factor, processor.size["shortest_edge"], processor.size["longest_edge"])
        return 1, height // patch, width // patch

    def features(self, model, inputs) -> torch.Tensor:
        grid = torch.tensor([inputs.grid])
        out = model.model.get_image_features(inputs.pixel_values.to(model.device), grid.to(model.device), return_dict=True)
        return out.pooler_output[0]

    def rope(self, model, ids, spans):
        types = torch.zeros(1, len(ids), dtype=torch.int)
        for start, end, _ in spans:
            types[0, start:end] = 1
        grids = torch.tensor([inputs.grid for _, _, inputs in spans]) if spans else None
        positions, shift = model.model.get_rope_index(torch.tensor([ids]), mm_token_type_ids=types, image_grid_thw=grids)
        return positions[:, 0], int(shift)


class Llava(VisionFamily):
    placeholder = "<image>"

    def inputs(self, processor, image, size) -> ImageInputs:
        pixels = processor(images=[image], return_tensors="pt")["pixel_values"]
        return ImageInputs(pixels, None, 0, size)  # tokens: from the model config (`fixed_tokens`)

    def features(self, model, inputs) -> torch.Tensor:
        out = model.model.get_image_features(pixel_values=inputs.pixel_values.to(model.device, model.dtype),
                                             return_dict=True)
        features = out.pooler_output
        return (features[0] if isinstance(features, (list, tuple)) else features.reshape(-1, features.shape[-1]))

    def fixed_tokens(self, config) -> int:
        vision = config.vision_config
        patches = (vision.image_size // vision.patch_size) ** 2
        return patches + (1 if config.vision_feature_select_strategy == "full" else 0)


FAMILIES = {"qwen2_vl": QwenVL, "qwen2_5_vl": QwenVL, "llava": Llava}


def vision_family(config) -> VisionFamily | None:
    """The family adapter of a model config (None: a text-only model); an image+text model of
    another family is refused in one line."""
    if getattr(config, "vision_config", None) is None:
        return None
    family = FAMILIES.get(config.model_type)
    if family is None:
        raise ModelLoadError(f"model type '{config.model_type}' reads images, and this backend knows "
                             f"{', '.join(sorted(FAMILIES))}: evaluate one of those families")
    return family()


def load_image_processor(pretrained: str, family: VisionFamily, min_pixels: int, max_pixels: int, **kwargs):
    """The model folder's image processor, given the pixel range (Qwen-VL's)."""
    from transformers import AutoImageProcessor

    options = {"min_pixels": min_pixels, "max_pixels": max_pixels} if isinstance(family, QwenVL) else {}
    try:
        return AutoImageProcessor.from_pretrained(pretrained, **kwargs, **options)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"'{pretrained}' has no image processor ({one_line(e)}): a vision-language model folder "
                             "needs its preprocessor_config.json; copy it from the model's repository") from e


@dataclass
class VisionEncoder(TokenizerEncoder):
    """`TokenizerEncoder` for prompts with images: widens each image placeholder to the image's
    tokens and prepares every distinct image once (by digest)."""

    family: VisionFamily | None = None
    processor: object = None
    image_pipeline: str = "chat"
    min_pixels: int = 256 * FACTOR**2
    max_pixels: int = 1605632
    image_tokens: int = 0  # fixed token count per image (LLaVA); 0: the processor's grid says
    _images: dict = field(default_factory=dict, repr=False, compare=False)
    reads_images = True

    def image_shape(self, digest: str) -> ImageInputs:
        """An image's grid and token count (no pixel values), from its size alone, kept per digest:
        prompts are laid out without holding any image's pixels."""
        if digest not in self._images:
            from PIL import Image

            width, height = Image.open(io.BytesIO(self.media.get(digest))).size
            low, high = (self.min_pixels, self.max_pixels) if self.image_pipeline == "simple" else CHAT_PIXELS
            prepared = fit_pixels(height, width, FACTOR, low, high)
            grid = self.family.grid(self.processor, prepared)
            merged = getattr(self.processor, "merge_size", 2) ** 2
            tokens = grid[0] * grid[1] * grid[2] // merged if grid else self.image_tokens
            self._images[digest] = ImageInputs(None, grid, tokens, (width, height))
        return self._images[digest]

    def image(self, digest: str) -> ImageInputs:
        """One image of the media store decoded, prepared and processed, its pixel values made now
        (the caller keeps what it needs: a vision forward reads them once)."""
        from PIL import UnidentifiedImageError

        try:
            prepared = prepare_image(self.media.get(digest), self.image_pipeline, self.min_pixels, self.max_pixels,
                                     resize=isinstance(self.family, QwenVL))
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise LightevalLikeError(f"image {digest[:12]} cannot be read ({one_line(e)})") from e
        inputs = self.family.inputs(self.processor, prepared, prepared.size)
        shape = self.image_shape(digest)
        if inputs.grid != shape.grid:
            raise LightevalLikeError(f"image {digest[:12]}: the processor made a {inputs.grid} grid where its size "
                                     f"gives {shape.grid}: check min_pixels/max_pixels against the processor's")
        return ImageInputs(inputs.pixel_values, inputs.grid, shape.tokens, shape.size)

    def image_prompt(self, prompt: Prompt) -> tuple[list[int], list[tuple[int, int, str]]]:
        """The prompt's ids, each image placeholder widened to its image's tokens, and the image
        spans (start, end, digest) in them."""
        return self._widen(self.encode(self.render(prompt)), prompt.images)

    def image_request_item(self, request: LoglikelihoodRequest) -> ScoreItem:
        """A loglikelihood request whose prompt has images as one scored item (never cut: an
        image cannot lose its first tokens)."""
        context, continuation = self.encode_pair(self.render(request.prompt), self._continuation_space(request.continuation))
        ids, spans = self._widen(context, request.prompt.images)
        if not continuation or len(ids) + len(continuation) > self.max_length + 1:
            raise LightevalLikeError(f"a request with images is {len(ids) + len(continuation)} tokens, over max_length "
                                     f"{self.max_length} (or its continuation {request.continuation!r} is empty): "
                                     "lower max_pixels= or raise max_length=")
        whole = ids + continuation
        return ScoreItem(tuple(whole[:-1]), len(ids) - 1, tuple(continuation), tuple(spans))

    def _widen(self, ids: list[int], images: tuple[str, ...]) -> tuple[list[int], list[tuple[int, int, str]]]:
        placeholder = self.tokenizer.convert_tokens_to_ids(self.family.placeholder)
        at = [i for i, t in enumerate(ids) if t == placeholder]
        if len(at) != len(images):
            raise LightevalLikeError(f"the chat template wrote {len(at)} image placeholders for {len(images)} "
                                     "images: use the model's own chat template")
        out, spans, last = [], [], 0
        for index, digest in zip(at, images):
            out += ids[last:index]
            count = self.image_shape(digest).tokens
            spans.append((len(out), len(out) + count, digest))
            out += [placeholder] * count
            last = index + 1
        return out + ids[last:], spans
