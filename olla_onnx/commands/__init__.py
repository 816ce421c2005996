"""One module per CLI command; each registers itself on :data:`olla_onnx.commands.app.app`."""
