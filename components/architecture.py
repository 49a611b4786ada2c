"""The settings that define the model, shared by the configuration (which must
not import Keras) and the model builders (which must not import the pipeline)."""

# encoder: "unet" is the original project's, trained from scratch and shaped by
# unet_filters, unet_depth and separable; "efficientnet-lite0" and the deeper
# "efficientnet-lite1" are pretrained on ImageNet (components/effnet_unet.py)
# and shaped by effnet_stride and effnet_full_resolution.
ENCODERS = ("unet", "efficientnet-lite0", "efficientnet-lite1")
# Where an EfficientNet encoder may end.
EFFNET_STRIDES = (16, 32)

# The PipelineConfig field names that define the architecture.
ARCHITECTURE_KEYS = (
    "encoder",
    "image_height",
    "image_width",
    "unet_filters",
    "unet_depth",
    "separable",
    "effnet_stride",
    "effnet_full_resolution",
)
