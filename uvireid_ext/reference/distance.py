"""Plain reference for the distance ops (work in progress)."""
