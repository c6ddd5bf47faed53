"""tidal.cost."""
