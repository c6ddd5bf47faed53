"""tidal.scaling."""
