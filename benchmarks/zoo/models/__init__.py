"""Zoo families, one module per defining library; importing this package registers them all."""
