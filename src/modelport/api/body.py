"""Reading request bodies with a hard size cap (413 instead of buffering anything), as JSON
or as a multipart form."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from modelport.errors import InvalidRequestError, PayloadTooLargeError
from modelport.multipart import FilePart

# A form's text fields are short (model, language, prompt); files may take the body's size.
_FIELD_BYTES_MAX = 64 * 1024
_PARTS_MAX = 64


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise InvalidRequestError("Content-Length header is not a number") from None
        if size > limit:
            raise PayloadTooLargeError(f"request body of {size} bytes exceeds the {limit}-byte limit")
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise PayloadTooLargeError(f"request body exceeds the {limit}-byte limit")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body:
        raise InvalidRequestError("request body is empty; send a JSON object")
    return body


async def read_form(request: Request, limit: int) -> dict[str, Any]:
    """A multipart/form-data body as a dict: text fields as strings (a repeated field as a
    list), files as FilePart; anything else is a 400."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise InvalidRequestError(f"send this route a multipart/form-data body (got "
                                  f"{content_type.split(';')[0] or 'no Content-Type'})")
    body = await read_body(request, limit)

    async def chunks():  # noqa: ANN202
        yield body

    parser = MultiPartParser(request.headers, chunks(), max_files=_PARTS_MAX,
                             max_fields=_PARTS_MAX, max_part_size=_FIELD_BYTES_MAX)
    try:
        form = await parser.parse()
    except (MultiPartException, ValueError) as error:
        raise InvalidRequestError(f"request body is not a valid multipart form: {error}") from None
    fields: dict[str, Any] = {}
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            value = FilePart(value.filename or "file", value.content_type or
                             "application/octet-stream", await value.read())
        previous = fields.get(name)
        fields[name] = value if previous is None else (
            [*previous, value] if isinstance(previous, list) else [previous, value])
    return fields
