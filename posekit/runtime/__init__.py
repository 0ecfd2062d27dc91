"""The numpy-only deploy layer: what runs outside an exported graph, with no torch and no onnx.

`geometry` (crop matrices back to the original frame), `paf` (bottom-up grouping), `onnx`
(posekit metadata read through onnxruntime, sessions with their intra-op threads), `dogs` (the
labelled-joint scores), `landmarks` (FSE's resize-then-crop and its fitted MAFL regressor),
`predict` (an exported file run on images: `RuntimeModel`). The families'
`postprocess` calls the same functions, so an ONNX deployment and the PyTorch path share one
implementation. An import-linter contract (pyproject.toml) keeps torch and onnx out of it.
"""
