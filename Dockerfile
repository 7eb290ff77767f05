# The AlphaPulse worker image. Build context: the repository root.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ALPHAPULSE_DATA_DIR=/var/lib/alphapulse \
    ALPHAPULSE_WEB_HOST=0.0.0.0

RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY alphapulse ./alphapulse
COPY stream ./stream
COPY agents ./agents
COPY models ./models
RUN pip install --no-cache-dir .

RUN useradd --system --home /var/lib/alphapulse alphapulse \
 && mkdir -p /var/lib/alphapulse && chown alphapulse /var/lib/alphapulse
USER alphapulse
EXPOSE 6066
# Liveness only: /readyz also fails while partitions load, the broker is away or MLflow is down,
# none of which a restart mends. Orchestrators that gate on readiness use /readyz themselves.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "alphapulse.healthcheck"]
ENTRYPOINT ["alphapulse"]
CMD ["worker"]
