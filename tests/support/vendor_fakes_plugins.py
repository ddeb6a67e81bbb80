"""Provider plugins that misbehave in every way a plugin can, for the gateway to contain."""

from __future__ import annotations

from modelport.errors import UpstreamError
from modelport.providers import ChatProvider, ChatResult, ToolCallResult, Usage


class RaisingProvider(ChatProvider):
    async def chat(self, request):
        # Vendor SDKs do put the key into their messages; it must not reach anyone.
        raise RuntimeError(f"vendor SDK exploded with key {self.settings.api_key}")


class GarbageProvider(ChatProvider):
    async def chat(self, request):
        return 42


class GarbageUsageProvider(ChatProvider):
    async def chat(self, request):
        return ChatResult("text", usage={"tokens": "many"})


class GarbageStreamProvider(ChatProvider):
    async def chat(self, request):
        return "unused"

    async def stream_chat(self, request):
        yield {"not": "a string"}


class FailsMidStreamProvider(ChatProvider):
    async def chat(self, request):
        return "unused"

    async def stream_chat(self, request):
        yield "first words "
        raise ConnectionResetError("vendor hung up")


class BusyProvider(ChatProvider):
    """Asks for a retry the documented way: by raising UpstreamError with a 5xx status."""

    calls = 0

    async def chat(self, request):
        type(self).calls += 1
        if type(self).calls == 1:
            raise UpstreamError("vendor busy", status=503)
        return "second try"


class BadEmbeddingsProvider(ChatProvider):
    async def chat(self, request):
        return "x"

    async def embed(self, texts):
        return [[0.1]]  # one vector for any number of texts


class CrashesAtStartProvider(ChatProvider):
    def __init__(self, settings):
        raise ValueError(f"cannot log in with {settings.api_key}")


class NoChatMethod:
    def __init__(self, settings):
        pass


class ToolCallingProvider(ChatProvider):
    """Calls the first offered tool with the user's text as its argument."""

    supports_tools = True

    async def chat(self, request):
        name = request.tools[0]["function"]["name"]
        return ChatResult(tool_calls=[ToolCallResult(name, {"q": request.messages[-1].text()})])


class StreamingToolCallingProvider(ToolCallingProvider):
    async def stream_chat(self, request):
        yield "Looking that up. "
        yield ToolCallResult("lookup", '{"q": "x"}', id="call_fixed")
        yield Usage(prompt_tokens=3, completion_tokens=4)
