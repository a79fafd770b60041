"""Torchvision-format weights: import (`load_torch_weights`) and export (`save_torch_weights`)
for every model in `jaxcnn.list_models()`, by torchvision's key names (layouts: layout.py).

    variables, report = load_torch_weights("resnet50", "resnet50.pth", num_classes=2)
    print(report.format_table())     # loaded / newly initialized / missing / unexpected
    save_torch_weights(variables, "resnet50", "out.safetensors")

.safetensors needs no torch; .pth / .pt files need `pip install torch`. The PyTorch twins of
the models, with torchvision's module names, are in `jaxcnn.weights.torch_models` (needs torch).
"""

from jaxcnn.weights.convert import LoadReport, load_torch_weights, save_torch_weights, torch_state_dict
from jaxcnn.weights.io import read_state_dict, write_state_dict

__all__ = ["LoadReport", "load_torch_weights", "read_state_dict", "save_torch_weights",
           "torch_state_dict", "write_state_dict"]
