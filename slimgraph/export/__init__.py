"""Stage 6: simplified, checked ONNX of a slim model."""
