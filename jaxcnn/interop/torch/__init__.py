"""PyTorch in and out: state_dicts for the zoo and any model, a converter for your own CNN, a layer-by-layer diff.

PyTorch is optional (``pip install jaxcnn[torch]``): functions that need it
raise :class:`TorchNotInstalledError` (an ``ImportError``) naming the extra;
``.safetensors`` files load without it.

=============================================  ===============================================
``from_torch(name_or_model, state_dict)``      state_dict -> jaxcnn variables (strict by default)
``to_torch(name_or_model, variables)``         jaxcnn variables -> state_dict
``load_state_dict(path)``                      ``.pt`` / ``.pth`` / ``.safetensors`` -> ``{key: array}``
``save_state_dict(state_dict, path)``          the other way
``load_weights(path, name_or_model, ...)``     ``load_state_dict`` + ``from_torch``
``load_variables(path, model_name, kwargs)``   the one call for ``--init-from`` / ``--weights``
``from_torch_module(module)``                  a ``Sequential``-style CNN -> ``(model, variables)``
``compare(torch_model, model, variables, x)``  per-layer differences, first layer that parts
``layout``                                     every layout rule (conv, dense, flatten, BN)
=============================================  ===============================================

See ``docs/porting_from_pytorch.md``.
"""

from jaxcnn.interop.torch import layout
from jaxcnn.interop.torch._deps import TorchNotInstalledError
from jaxcnn.interop.torch.compare import Comparison, LayerDiff, compare
from jaxcnn.interop.torch.convert import (
    IncompatibleKeys,
    StateDictMismatchError,
    from_torch,
    to_torch,
)
from jaxcnn.interop.torch.files import (
    CheckpointError,
    load_state_dict,
    load_variables,
    load_weights,
    save_state_dict,
)
from jaxcnn.interop.torch.module import from_torch_module
from jaxcnn.interop.torch.ported import Activation, PortedCNN, TorchFlatten

__all__ = [
    "Activation",
    "CheckpointError",
    "Comparison",
    "IncompatibleKeys",
    "LayerDiff",
    "PortedCNN",
    "StateDictMismatchError",
    "TorchFlatten",
    "TorchNotInstalledError",
    "compare",
    "from_torch",
    "from_torch_module",
    "layout",
    "load_state_dict",
    "load_variables",
    "load_weights",
    "save_state_dict",
    "to_torch",
]
