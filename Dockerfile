# The stream worker image (also runs replay, bench, evaluate). No torch: training is an extra.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY stream_app ./stream_app
COPY schemas ./schemas
COPY models/stream_app_train ./models/stream_app_train
RUN pip install --no-cache-dir .
USER nobody
ENV STREAM_APP_STATE_DIR=/tmp/stream-app
# the worker's /metrics, /healthz and /readyz (README, Operations)
EXPOSE 6066
CMD ["stream-app", "worker", "--web-port", "6066"]
