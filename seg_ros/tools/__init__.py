"""Tools around the node: the demo (camera, client, runner), synthetic clips, model download."""
