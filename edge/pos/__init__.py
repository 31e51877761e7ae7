"""edge.pos.sales."""
