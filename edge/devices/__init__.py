"""Device drivers: what one device on a bus does in a poll or a command (the bus scheduler calls them)."""
