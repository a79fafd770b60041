"""ONNX export of the zoo's evaluation forward pass (`jaxcnn export RUN --format onnx`).

Route: the forward pass (normalization, `model.apply(..., train=False)`, softmax) is traced to
a jaxpr and each primitive is written as ONNX nodes with the `onnx` package, the weights as
initializers. Chosen over the alternatives because

- the jaxpr is exactly what JAX runs, so parity needs no second description of any layer: the
  zoo's ceil-mode pools, torch-style padding, adaptive pools and zero-padding shortcuts arrive
  as slice / pad / reduce_window / dot_general and need no case of their own. Walking the Flax
  modules instead would re-implement every layer (and any new one) in ONNX terms;
- the whole zoo, every architecture and head, traces to 22 primitives (conv_general_dilated,
  dot_general, reduce_window_max, reduce_sum / reduce_max, slice, pad, concatenate, reshape,
  transpose, broadcast_in_dim, eight elementwise ones, two kinds of call), each one ONNX operator
  or a fixed pair; a primitive without a rule is a clear `OnnxExportError`, and the rules also
  cover common layers outside the zoo (LayerNorm, GELU, average pooling, depthwise convolution);
- jax2onnx pins orbax-checkpoint < 0.11.37 (jaxcnn needs 0.12) and jax2tf + tf2onnx cannot
  read jax 0.10's native serialization; the `onnx` package is the only new dependency, in the
  `onnx` extra.

BatchNorm is not folded into the file's weights: its eval arithmetic stays three elementwise
nodes against constants, `x - mean` written as `x + (-mean)` (the same IEEE result bit for bit).
That is the pattern ONNX Runtime's Conv-Add / Conv-Mul fusions fold into the convolution when it
loads the file (measured: resnet50, batch 8 at 224 px, 3.7 s per run with `Sub`, 1.9 s with
`Add`), so the file computes what JAX computes and the runtime chooses its own fused rounding.
Opset 17; the batch dimension is dynamic.
"""

from jaxcnn.onnx_export.errors import OnnxExportError
from jaxcnn.onnx_export.export import ARTIFACT, INPUT_LAYOUTS, OPSET, export_onnx, export_run_onnx

__all__ = ["ARTIFACT", "INPUT_LAYOUTS", "OPSET", "OnnxExportError", "export_onnx", "export_run_onnx"]
