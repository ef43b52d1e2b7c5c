# One image for every quietwire service; the command picks the service:
#   docker run quietwire:dev signaling | keyagreement | relay
# Build stage: a venv with quietwire and exactly the packages of uv.lock (the
# same lock `make setup` installs; no second resolution), its signaling hot path
# compiled with the locked mypyc (tools/image-venv). Final stage: that venv on a slim
# Python, no pip, no uv, no compilers, a non-root user.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_NO_CACHE=1 UV_PYTHON_DOWNLOADS=never UV=/opt/uv/bin/uv PYTHON=/usr/local/bin/python3
RUN apt-get update \
    && apt-get install --yes --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY tools/uv.txt ./tools/
RUN python -m venv /opt/uv && /opt/uv/bin/pip install --require-hashes --no-deps -r tools/uv.txt
COPY pyproject.toml uv.lock README.md ./
COPY tools/image-venv tools/build_native.py ./tools/
COPY services ./services
RUN tools/image-venv /opt/quietwire /opt/build

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/quietwire/bin:$PATH
# libnftables: the relay's kernel forwarding (QW_RELAY_KERNEL_FORWARDING), off by default.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends libnftables1 \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin quietwire
COPY --from=build /opt/quietwire /opt/quietwire
USER 10001:10001
# Containers that set QW_HEALTH_PORT (the compose file, the chart) answer this.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 CMD ["quietwire", "health"]
ENTRYPOINT ["quietwire"]
