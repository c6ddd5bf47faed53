"""tidal.residency."""
