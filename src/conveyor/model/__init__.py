"""Layer 1: the job model. Pure data and rules, no I/O."""
