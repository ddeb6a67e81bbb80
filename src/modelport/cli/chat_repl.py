"""The interactive loop of `modelport chat`: local /commands, streamed answers, Ctrl-C."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.text import Text

HELP = """commands (never sent to the model):
  /help    this list
  /reset   forget the conversation so far
  /exit    leave (also /quit, Ctrl-D, or Ctrl-C at the prompt)
Ctrl-C while an answer streams stops that answer.
A message that starts with / is sent as typed when written with //, e.g. //etc/hosts."""

StreamChat = Callable[[list[dict[str, str]]], Iterator[str]]


class ChatSession:
    """One conversation; `stream` sends the history and yields the answer's text pieces."""

    def __init__(self, stream: StreamChat, out: Console) -> None:
        self.stream = stream
        self.out = out
        self.history: list[dict[str, str]] = []

    def handle(self, text: str) -> bool:
        """Act on one line the user typed; False when the user asked to leave."""
        line = text.strip()
        if not line:
            return True
        if line.startswith("/") and not line.startswith("//"):
            return self._command(line)
        self.ask(line[1:] if line.startswith("//") else text)
        return True

    def _command(self, line: str) -> bool:
        name = line.split()[0].lower()
        if name in ("/exit", "/quit"):
            return False
        if name == "/help":
            self.out.print(HELP, markup=False)
        elif name == "/reset":
            self.history.clear()
            self.out.print("conversation cleared", style="dim")
        else:
            self.out.print(Text(f"unknown command {name}; /help lists the commands", "yellow"))
        return True

    def ask(self, text: str) -> None:
        """Stream one answer; Ctrl-C stops it and keeps what arrived."""
        self.history.append({"role": "user", "content": text})
        pieces: list[str] = []
        stream = self.stream(self.history)
        try:
            for piece in stream:
                pieces.append(piece)
                self.out.print(piece, end="", markup=False)
        except KeyboardInterrupt:
            # Closing the generator closes the HTTP stream, which makes the server stop
            # generating; the conversation goes on at the next prompt.
            stream.close()
            self.out.print()
            self.out.print("[answer stopped]", style="dim", markup=False)
        else:
            self.out.print()
        if pieces:
            self.history.append({"role": "assistant", "content": "".join(pieces)})
        else:
            self.history.pop()  # nothing came back: do not leave two user turns in a row

    def loop(self, prompt: Callable[[], str]) -> None:
        """Read lines until /exit, Ctrl-D or Ctrl-C at the prompt."""
        # Ctrl-C is part of this loop's interface. A process started in the background of a
        # non-interactive shell inherits SIGINT ignored, and Python then leaves it so.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        while True:
            try:
                text = prompt()
            except (EOFError, KeyboardInterrupt):
                self.out.print()
                return
            if not self.handle(text):
                return
