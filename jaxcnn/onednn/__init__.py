"""jaxcnn's CPU convolutions on oneDNN, called through the XLA FFI.

XLA:CPU's own convolution kernels take 2-5x oneDNN's time on the shapes of the zoo, and no XLA
flag routes them to oneDNN in the published jaxlib; so jaxcnn calls oneDNN itself: `conv.cc`
(three FFI handlers, compiled on first use by `build`), loaded and chosen by `library`
(`JAXCNN_CPU_CONV=auto|onednn|xla`), wrapped as a differentiable, batch-sharded `conv2d` by
`conv`. The models never call it directly: `jaxcnn.models.cpu_conv.conv_general_dilated` picks
it for the CPU platform when a step is lowered.
"""
