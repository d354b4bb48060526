"""Built-in projector plugins (one folder per component)."""
