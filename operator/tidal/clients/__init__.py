"""tidal.clients."""
