"""Built-in fusion plugins (one folder per component)."""
