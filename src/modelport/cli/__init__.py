"""The `modelport` command and what only it uses: the terminal chat, the HTTP clients of
a running server, downloads and the tables it prints."""
