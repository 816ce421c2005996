from olla_onnx.cli import app

app()
