# The Kubeflow Pipelines image: TFX 1.21, TensorFlow 2.21 and this project's
# pipeline code (tfx_pipeline, components, serving), at exactly the versions of
# requirements.lock.  tfx_pipeline/config.py's `image` names where it is pushed.
#
#   docker build -t ghcr.io/background-remover/pipeline:0.1.0 .
#
# The pipeline spec (make kubeflow) sets each step's command, so the image
# needs no entrypoint of its own.
#
# Debian 13 (trixie): glibc 2.41, as TFX 1.21's ml-metadata and TFDV wheels
# need glibc >= 2.38; Python 3.13, as in the development environment.  Pin the
# digest (python:3.13-slim-trixie@sha256:...) when you build a release.
FROM python:3.13-slim-trixie

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_NO_CACHE=1 \
    UV_SYSTEM_PYTHON=1

# The same uv as scripts/env.sh.
RUN pip install "uv==0.13.8"

WORKDIR /opt/background-remover

# Dependencies first, in their own layer: the pipeline extra's requirements,
# every version taken from the lock (the lock also pins the dev tools, which
# the constraint leaves out of the image).
COPY pyproject.toml requirements.lock ./
RUN uv pip install -r pyproject.toml --extra pipeline -c requirements.lock

# Then the project itself, without touching the pinned dependencies.
COPY README.md ./
COPY tfx_pipeline ./tfx_pipeline
COPY components ./components
COPY serving ./serving
# The shipped model, so that init_model = "models/bgremover/1" fine-tunes it here too.
COPY models ./models
RUN uv pip install --no-deps . \
    && python -c "import tfx.v1, tensorflow, tfx_pipeline.pipeline, components.trainer_module"

# Any numeric uid works; the same one as TF Serving's pods (k8s/base) keeps
# models written by the Pusher on a shared volume readable there.
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin pipeline
USER 10001
