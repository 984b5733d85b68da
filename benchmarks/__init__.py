"""Benchmarks of EA against vanilla transformers: speed, memory, generation and int8 ONNX."""
