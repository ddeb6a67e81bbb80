"""Foreign APIs (OpenAI Responses, Anthropic Messages): one pure translation module per API,
to and from OpenAI chat completions, used both for a route that serves the API and for an
upstream that speaks it."""
