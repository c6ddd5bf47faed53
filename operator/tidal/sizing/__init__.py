"""tidal.sizing."""
