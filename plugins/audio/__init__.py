"""Built-in audio plugins (one folder per component)."""
