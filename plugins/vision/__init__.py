"""Built-in vision plugins (one folder per component)."""
