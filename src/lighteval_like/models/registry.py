"""The model backends, one entry each: its name, its config class, how its model loads in a
process and how it is closed. Every entry point runs any of them the same way
(`cli.entrypoints.run`); adding a backend is a subpackage of `models/` and an entry here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lighteval_like.api.errors import UsageError
from lighteval_like.models.config import BackendConfig
from lighteval_like.models.endpoint.config import EndpointModelConfig
from lighteval_like.models.nanotron.config import NanotronModelConfig
from lighteval_like.models.transformers.config import TransformersModelConfig
from lighteval_like.models.vllm.config import VLLMModelConfig

if TYPE_CHECKING:
    from lighteval_like.models.base import LanguageModel
    from lighteval_like.runtime import ProcessContext
    from lighteval_like.runtime.placement import MeshPlacement


@dataclass(frozen=True)
class LoadContext:
    """Where this process evaluates: its ranks (`process`) and where its model loads; the
    launch fills it (`accelerate`, torchrun, one process), the run adds its batch size."""

    process: ProcessContext
    device: str | None = None  # None: the model arg `device`, else cuda if available, else cpu
    placement: MeshPlacement | None = None  # torchrun's (dp, pp, tp) mesh
    batch_size: int | None = None  # None: the backend's automatic batching

    @property
    def show_progress(self) -> bool:
        return self.process.is_main


def _nothing(*_) -> None:
    """A backend that needs no check before the run, or nothing done at its close."""


@dataclass(frozen=True)
class Backend:
    """`load(config, context)` makes the model (called once the data is ready); `close(model)`
    runs after the run, whatever its end; `check()` refuses what is missing before data loads."""

    name: str
    config_class: type[BackendConfig]
    load: Callable[[BackendConfig, LoadContext], LanguageModel]
    close: Callable[[LanguageModel], None] = _nothing
    check: Callable[[], None] = _nothing


def _load_transformers(config: TransformersModelConfig, context: LoadContext) -> LanguageModel:
    from lighteval_like.models.transformers.model import TransformersModel

    return TransformersModel(config, context.batch_size, context.device, context.show_progress, context.placement)


def _load_nanotron(config: NanotronModelConfig, context: LoadContext) -> LanguageModel:
    from lighteval_like.models.nanotron.model import NanotronCheckpointModel

    return NanotronCheckpointModel(config, context.batch_size, context.device, context.show_progress,
                                   context.placement)


def _load_vllm(config: VLLMModelConfig, context: LoadContext) -> LanguageModel:
    from lighteval_like.models.vllm.model import VLLMModel

    return VLLMModel(config, context.show_progress)


def _check_vllm() -> None:
    from lighteval_like.models.vllm.model import require_vllm

    require_vllm()


def _close_vllm(model) -> None:
    model.close()  # its engine replicas are processes of their own


def _load_endpoint(config: EndpointModelConfig, context: LoadContext) -> LanguageModel:
    from lighteval_like.models.endpoint.model import EndpointModel

    return EndpointModel(config, context.show_progress)


def _close_endpoint(model) -> None:
    model.close()  # its request threads


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("transformers", TransformersModelConfig, _load_transformers),
    Backend("nanotron", NanotronModelConfig, _load_nanotron),
    Backend("vllm", VLLMModelConfig, _load_vllm, close=_close_vllm, check=_check_vllm),
    Backend("endpoint", EndpointModelConfig, _load_endpoint, close=_close_endpoint),
)}


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise UsageError(f"unknown backend '{name}': use one of {', '.join(BACKENDS)}")
    return BACKENDS[name]
