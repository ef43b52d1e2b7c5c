# One image for every quietwire service; the command picks the service:
#   docker run quietwire:dev signaling | keyagreement | relay
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services ./services
RUN pip install --no-compile . && rm -rf /src \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin quietwire
WORKDIR /
USER 10001
ENTRYPOINT ["quietwire"]
