"""Layer 4: the `conveyor` command."""
