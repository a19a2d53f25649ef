"""Training the sentence scorer (``vigil-rules train``). Needs the ``[train]`` extra (torch,
transformers, onnx, onnxruntime); never installed on laptops or in CI. Inference lives in
``rules.scorer`` and needs none of this."""

__all__: list[str] = []
