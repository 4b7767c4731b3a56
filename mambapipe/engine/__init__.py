"""The native engine: TensorRT-LLM Mamba checkpoint -> engine dir -> batched generation in PyTorch."""
