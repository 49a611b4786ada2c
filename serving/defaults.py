"""Defaults shared by the local server, the client, the CLI and the pipeline."""

SERVER_ADDRESS = "localhost:8500"
MODEL_NAME = "bgremover"
# Signature names in every SavedModel the pipeline exports.
SIGNATURE_BYTES = "serving_default"
SIGNATURE_FLOAT = "predict_float"
SIGNATURE_EXAMPLES = "predict_examples"
# Tensor names of the bytes signature.
INPUT_IMAGES = "images"
OUTPUT_MASK = "mask"
OUTPUT_HEIGHT = "height"
OUTPUT_WIDTH = "width"
# Photos per Predict request the client sends: TF Serving with batching refuses a request
# larger than its max_batch_size (8 in k8s/overlays/cpu/batching.config).
MAX_PHOTOS_PER_REQUEST = 8
# Largest photo the exported model decodes (width x height from its header): a 48-megapixel
# phone photo passes, a small file claiming a huge size is refused before it is decoded.
MAX_PHOTO_PIXELS = 50_000_000
# Photo files folders are searched for (the CLI) and ingested (the pipeline): what
# Pillow reads, with pillow-heif for iPhones' HEIC.
PHOTO_EXTENSIONS = (
    ".jpg", ".jpeg", ".jfif", ".png", ".webp", ".avif", ".heic", ".heif",
    ".bmp", ".gif", ".tif", ".tiff",
)  # fmt: skip
