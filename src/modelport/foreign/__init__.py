"""Foreign APIs (Anthropic Messages, ...) translated to and from OpenAI chat, one module each,
used in both directions: by upstream adapters and by the routes that serve those APIs."""
