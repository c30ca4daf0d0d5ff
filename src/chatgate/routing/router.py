"""The Router: model names to backends. It is itself a Backend.

A name resolves, in order: a served model id; ``local/<id>`` for a local model; an alias from the
config. Anything else is a 404 ``model_not_found``. Fallbacks, retries and balancing across
deployments arrive with upstream providers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from chatgate.backends.base import Backend
from chatgate.context import RequestContext
from chatgate.errors import ModelNotFoundError
from chatgate.protocol import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Model


class Router:
    def __init__(self, backends: Mapping[str, Backend], aliases: Mapping[str, str], *, local: set[str]):
        self._backends = dict(backends)
        self._aliases = dict(aliases)
        self._local = set(local)

    def resolve(self, name: str) -> tuple[str, Backend]:
        """The id of the model that ``name`` designates, and its backend."""
        if name in self._backends:
            return name, self._backends[name]
        if name.startswith("local/") and name[len("local/") :] in self._local:
            model_id = name[len("local/") :]
            return model_id, self._backends[model_id]
        target = self._aliases.get(name)
        if target is not None and target in self._backends:
            return target, self._backends[target]
        raise ModelNotFoundError(name)

    async def complete(self, req: ChatCompletionRequest, ctx: RequestContext) -> ChatCompletion:
        _, backend = self.resolve(req.model)
        return await backend.complete(req, ctx)

    def stream(self, req: ChatCompletionRequest, ctx: RequestContext) -> AsyncIterator[ChatCompletionChunk]:
        _, backend = self.resolve(req.model)
        return backend.stream(req, ctx)

    def models(self) -> list[Model]:
        served: list[Model] = []
        for backend in self._backends.values():
            served.extend(backend.models())
        created = {m.id: m.created for m in served}
        aliases = [
            Model(id=alias, created=created.get(target, 0), owned_by="chatgate")
            for alias, target in self._aliases.items()
            if target in created
        ]
        return served + aliases

    def model(self, name: str) -> Model:
        """The model object for ``name`` (an id, ``local/<id>`` or an alias)."""
        model_id, backend = self.resolve(name)
        for model in backend.models():
            if model.id == model_id:
                return model.model_copy(update={"id": name})
        raise ModelNotFoundError(name)
