"""Placement value types and the readers of a layer's `system_description` that policies share."""
