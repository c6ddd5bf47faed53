"""tidal.devcluster."""
