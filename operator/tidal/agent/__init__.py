"""tidal.agent."""
