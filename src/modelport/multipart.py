"""multipart/form-data framing shared by the gateway and the providers: a form is a dict
of its fields, a file field's value a FilePart, so that a form goes through the relay like
a JSON body (its `model` replaced, the rest as the client sent it) and is encoded again
for the upstream."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, repr=False)
class FilePart:
    """An uploaded file of a form (an audio file for /v1/audio/transcriptions)."""

    filename: str
    content_type: str
    data: bytes

    def __repr__(self) -> str:  # never the bytes, in a log line or an error
        return f"FilePart({self.filename!r}, {self.content_type!r}, {len(self.data)} bytes)"


def is_form(body: Mapping[str, Any]) -> bool:
    return any(isinstance(value, FilePart) for value in body.values())


def encode_form(fields: Mapping[str, Any]) -> tuple[bytes, str]:
    """The form as a multipart/form-data body and its Content-Type (with the boundary).
    A list value is sent as the field repeated (`timestamp_granularities[]`)."""
    boundary = "modelport-" + secrets.token_hex(12)
    parts: list[bytes] = []
    for name, value in fields.items():
        for item in value if isinstance(value, list) else [value]:
            if item is None:
                continue
            parts.append(_part(boundary, name, item))
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _part(boundary: str, name: str, value: Any) -> bytes:
    disposition = f'form-data; name="{_quoted(name)}"'
    if isinstance(value, FilePart):
        head = (f"--{boundary}\r\nContent-Disposition: {disposition}; "
                f'filename="{_quoted(value.filename)}"\r\n'
                f"Content-Type: {value.content_type}\r\n\r\n")
        return head.encode() + value.data + b"\r\n"
    text = value if isinstance(value, str) else _scalar(value)
    return f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n{text}\r\n".encode()


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _quoted(text: str) -> str:
    # Quotes and line breaks would end the header early (RFC 7578 4.2: percent-encode them).
    return text.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
