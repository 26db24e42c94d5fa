"""Side-by-side benchmarks: jaxcnn vs PyTorch eager vs plain Flax, on this machine, in one run.

Run ``python -m benchmarks.run [--quick] [--only SECTION,...]`` (or ``jaxcnn bench ...``);
results land in ``benchmarks/results/<machine>.md`` and ``.json`` (``--quick``:
``benchmarks/results/quick/``). See ``benchmarks/run.py`` for the sections and the method.
"""
