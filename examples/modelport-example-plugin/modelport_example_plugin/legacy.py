"""An old online-API worker class ported to modelport: do_chat is kept as it was.

The old class subclassed the FastChat-based ApiModelWorker and was registered by hand;
here it subclasses DoChatProvider and is named in modelport.yaml. do_chat may block
(it runs in a thread) and may yield the answer so far, as the old workers did.
"""

from __future__ import annotations

from collections.abc import Iterator

from modelport.providers import ApiChatParams, DoChatProvider


class LegacyEchoWorker(DoChatProvider):
    def do_chat(self, params: ApiChatParams) -> Iterator[dict]:
        question = params.messages[-1]["content"]
        if question == "fail":
            # What old workers returned when the vendor said no.
            yield {"error_code": 500, "text": "the vendor refused"}
            return
        text = ""
        for word in f"{params.model_name} says {question}".split(" "):
            text += word + " "
            yield {"error_code": 0, "text": text.strip()}
