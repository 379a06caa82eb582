"""The weightless classic backend's image operations and per-object tracking."""
