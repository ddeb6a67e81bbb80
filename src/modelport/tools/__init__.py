"""Tool calling: which models can call tools and how, and reading the calls out of text."""
