"""Generation of the PyTorch module: emitter, values, identifiers and the model.py renderer."""
