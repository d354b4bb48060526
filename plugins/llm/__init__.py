"""Built-in llm plugins (one folder per component)."""
