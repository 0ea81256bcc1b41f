"""Zoo families, one module per defining library; importing this package registers them all."""

from . import (
    mnist,  # noqa: F401
    realesrgan,  # noqa: F401
    rtmdet,  # noqa: F401
    timm_models,  # noqa: F401
    torchvision_models,  # noqa: F401
    transformers_models,  # noqa: F401
    ultralytics_models,  # noqa: F401
    x3d,  # noqa: F401
)
