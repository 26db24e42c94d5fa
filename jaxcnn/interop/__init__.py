"""Interoperability with other frameworks: ``jaxcnn.interop.torch`` (PyTorch state_dicts and modules).

PyTorch is optional (``pip install jaxcnn[torch]``); ``.safetensors`` files load
without it.
"""
