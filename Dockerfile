# The shop-sync code location: the user-code server the Helm chart runs, and the image of every run
# and step pod (Dagster launches runs with the image of the code location that defined the job).
# Build: docker build -t registry.example.com/shop-sync:<version> .

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml ./
COPY etl_assets ./etl_assets
# The package and its runtime dependencies only; the dev and bench extras stay out of the image.
RUN pip install .

FROM python:3.11-slim-bookworm
# The root filesystem is read-only at run time: no bytecode writes, and output unbuffered for kubectl logs.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home
RUN groupadd --system --gid 10001 shopsync \
    && useradd --system --uid 10001 --gid shopsync --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin shopsync \
    && mkdir -p /opt/dagster/dagster_home /opt/dagster/app
COPY --from=build /opt/venv /opt/venv
WORKDIR /opt/dagster/app
# Numeric, so Kubernetes can verify runAsNonRoot without resolving the name.
USER 10001:10001
EXPOSE 3030
CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "3030", "-m", "etl_assets.definitions"]
