"""Turning generated token ids into streamed text: incremental decoding and stop sequences.

Pure logic with no torch or transformers import, so it is unit-tested without a model.
"""

from __future__ import annotations

from typing import Callable, Sequence

# Tokens of left context kept when decoding a new token: byte-level and SentencePiece
# tokenizers render a token differently (leading space, merged bytes) depending on what
# precedes it, so each step decodes a short window and emits only the difference.
_CONTEXT_TOKENS = 5
_INCOMPLETE_CHARACTER = "\ufffd"


class IncrementalDecoder:
    """Decode one token at a time, emitting text only once it is stable.

    `decode` turns a list of ids into text (special tokens skipped). A token that ends
    in the middle of a UTF-8 character decodes to U+FFFD; its text is held back until
    the following tokens complete the character.
    """

    def __init__(self, decode: Callable[[list[int]], str], context_ids: Sequence[int] = ()):
        self._decode = decode
        self._ids = list(context_ids[-_CONTEXT_TOKENS:]) if context_ids else []
        self._prefix_offset = 0
        self._read_offset = len(self._ids)

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        return self._advance(final=False)

    def flush(self) -> str:
        """Text still held back at the end of generation (e.g. a truncated character)."""
        return self._advance(final=True)

    def _advance(self, *, final: bool) -> str:
        if self._read_offset == len(self._ids):
            return ""
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full_text = self._decode(self._ids[self._prefix_offset :])
        if len(full_text) <= len(prefix_text) and not final:
            return ""
        if full_text.endswith(_INCOMPLETE_CHARACTER) and not final:
            return ""
        delta = full_text[len(prefix_text) :]
        # The emitted tokens become the next step's context, so each step decodes only
        # a few tokens however long the generation gets.
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        return delta


class StopSequenceFilter:
    """Cut the streamed text at the first stop sequence, without ever emitting it.

    Text that could be the beginning of a stop sequence is held back until the next
    pieces show whether the stop sequence really follows. Because of that, a stop
    sequence can never start inside text that was already emitted.
    """

    def __init__(self, stops: Sequence[str]):
        self._stops = [stop for stop in stops if stop]
        self._held = ""
        self.stopped = False

    def push(self, text: str) -> str:
        """Return the text that is safe to emit; sets `stopped` when a stop sequence appears."""
        if self.stopped:
            return ""
        if not self._stops:
            return text
        buffer = self._held + text
        cut = self._first_stop(buffer)
        if cut is not None:
            self.stopped = True
            self._held = ""
            return buffer[:cut]
        keep = self._longest_partial_stop(buffer)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """Held-back text at the end of generation: no stop sequence followed it."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _first_stop(self, buffer: str) -> int | None:
        positions = [pos for pos in (buffer.find(stop) for stop in self._stops) if pos >= 0]
        return min(positions) if positions else None

    def _longest_partial_stop(self, buffer: str) -> int:
        """Length of the longest suffix of `buffer` that is a proper prefix of a stop."""
        longest = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:length]):
                    longest = length
                    break
        return longest
