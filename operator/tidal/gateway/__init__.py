"""tidal.gateway."""
