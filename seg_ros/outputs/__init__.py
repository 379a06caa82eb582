"""Optional outputs the node publishes from a FrameResult: overlay, markers, point clouds,
detections, diagnostics, and the colours they share."""
