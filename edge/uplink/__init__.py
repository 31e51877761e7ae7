"""edge.uplink.session."""
