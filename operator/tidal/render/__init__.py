"""tidal.render."""
