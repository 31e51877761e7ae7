"""central.fleet."""
