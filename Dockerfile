# The AlphaPulse worker image. Build context: the repository root.
# Stage one builds the wheel; stage two installs it with the store and redis extras, every
# dependency at the version pinned in constraints.txt.
FROM python:3.11-slim AS build
# A C compiler for the online model's compiled step (models/_linear_core.c).
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY alphapulse ./alphapulse
COPY stream ./stream
COPY agents ./agents
COPY models ./models
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ALPHAPULSE_DATA_DIR=/var/lib/alphapulse \
    ALPHAPULSE_WEB_HOST=0.0.0.0

RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*

COPY constraints.txt /tmp/constraints.txt
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-cache-dir -c /tmp/constraints.txt "$(ls /tmp/wheels/alphapulse-*.whl)[store,redis]" \
 && rm -rf /tmp/wheels /tmp/constraints.txt

RUN useradd --system --home /var/lib/alphapulse alphapulse \
 && mkdir -p /var/lib/alphapulse && chown alphapulse /var/lib/alphapulse
USER alphapulse
WORKDIR /var/lib/alphapulse
EXPOSE 6066
# Liveness only: /readyz also fails while partitions load, the broker is away or MLflow is down,
# none of which a restart mends. Orchestrators that gate on readiness use /readyz themselves.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "alphapulse.healthcheck"]
ENTRYPOINT ["alphapulse"]
CMD ["worker"]
