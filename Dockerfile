# syntax=docker/dockerfile:1
# Build stage: a virtual environment with the exporter and its dependencies.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY exporter ./exporter
RUN python -m venv /opt/egress \
 && /opt/egress/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/egress/bin/pip install --no-cache-dir .

# Runtime stage: the venv only, run as an unprivileged user.
FROM python:3.11-slim
LABEL org.opencontainers.image.title="egress-exporter" \
      org.opencontainers.image.description="Prometheus exporter probing the egress paths of endpoint-security agents (Umbrella / Secure Access, WithSecure)." \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/egress /opt/egress
ENV PATH=/opt/egress/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Without a mounted config the built-in vendor presets run; mount one at /etc/egress-exporter/
# and pass --config.file=/etc/egress-exporter/config.yml to use your own.
USER 65532:65532
EXPOSE 10115
# Another port or a TLS web config: -e EGRESS_HEALTHCHECK_URL=https://127.0.0.1:10116/-/healthy
# (the check asks whether the process answers on loopback; the certificate is not verified).
ENV EGRESS_HEALTHCHECK_URL=http://127.0.0.1:10115/-/healthy
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s \
  CMD ["python", "-c", "import os, ssl, sys, urllib.request as r; sys.exit(r.urlopen(os.environ['EGRESS_HEALTHCHECK_URL'], timeout=2, context=ssl._create_unverified_context()).status != 200)"]
ENTRYPOINT ["egress-exporter"]
CMD ["--web.listen-address=:10115"]
