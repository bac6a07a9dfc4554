"""Command-line applications of ``clifer-edge`` (one module per sub-command)."""
