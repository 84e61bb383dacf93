"""Wire types and pure translation between the Anthropic and OpenAI dialects (no I/O)."""
