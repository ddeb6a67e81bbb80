"""Online LLM APIs: vendors as data, adapters, and the plugin API for user providers.

Plugin authors import from here::

    from modelport.providers import ChatProvider, ChatResult, Usage, DoChatProvider
"""

from modelport.providers.plugin_api import (
    ApiChatParams,
    ChatProvider,
    ChatResult,
    DoChatProvider,
    ProviderSettings,
    ToolCallResult,
    Usage,
)

__all__ = ["ApiChatParams", "ChatProvider", "ChatResult", "DoChatProvider", "ProviderSettings",
           "ToolCallResult", "Usage"]
